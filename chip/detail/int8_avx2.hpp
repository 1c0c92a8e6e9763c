#pragma once
/// \file
/// AVX2 int8 dot products for chip/kernels.cpp, compiled with -mavx2 in their own translation unit and
/// called only when the CPU has AVX2 (checked at run time). Exact: int8 values are widened to int16 and
/// multiplied pairwise into int32 with _mm256_madd_epi16 (|a*b + c*d| <= 2 * 127 * 127, no saturation,
/// unlike _mm256_maddubs_epi16), then summed in int32; integer sums are exact in any order, so the
/// results equal the portable loops bit for bit.

#include <cstdint>

namespace lpurt::chip::detail {

/// acc[j] = sum_k w[j*cols + k] * q[k] for j in [row_begin, row_end).
void gemv_int8_avx2(const int8_t* w, int64_t row_begin, int64_t row_end, int64_t cols, const int8_t* q,
                    int32_t* acc);
/// sum_k a[k] * b[k].
int32_t dot_int8_avx2(const int8_t* a, const int8_t* b, int64_t n);

}  // namespace lpurt::chip::detail
