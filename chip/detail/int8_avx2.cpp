#include "chip/detail/int8_avx2.hpp"

#include <immintrin.h>

namespace lpurt::chip::detail {

namespace {

constexpr int64_t prefetch_bytes = 4096;

inline int32_t horizontal_sum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

/// 32 int8 of a row against the widened activation halves: 2 madds, exact int32 pair sums.
inline __m256i madd32(const int8_t* row, __m256i q_lo, __m256i q_hi) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
  const __m256i w_lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w));
  const __m256i w_hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w, 1));
  return _mm256_add_epi32(_mm256_madd_epi16(w_lo, q_lo), _mm256_madd_epi16(w_hi, q_hi));
}

inline void load_q(const int8_t* q, __m256i& lo, __m256i& hi) {
  lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
  hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16)));
}

inline int32_t tail(const int8_t* a, const int8_t* b, int64_t begin, int64_t end) {
  int32_t s = 0;
  for (int64_t k = begin; k < end; ++k) s += static_cast<int32_t>(a[k]) * static_cast<int32_t>(b[k]);
  return s;
}

}  // namespace

int32_t dot_int8_avx2(const int8_t* a, const int8_t* b, int64_t n) {
  // Two independent accumulators over 64 bytes per step keep the adds off the critical path.
  __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0;
  int64_t k = 0;
  for (; k + 64 <= n; k += 64) {
    // The rows of a matrix lie back to back: ask for the line 4 KB ahead, past this row into the next
    // ones. The hardware prefetcher alone stops at every 4 KB page and restarts slowly; measured 12-25%
    // more GB/s over a decode step's matrices than without (no prefetch faults, so reading ahead of the
    // last row is harmless).
    _mm_prefetch(reinterpret_cast<const char*>(a + k + prefetch_bytes), _MM_HINT_T0);
    __m256i b_lo, b_hi;
    load_q(b + k, b_lo, b_hi);
    acc0 = _mm256_add_epi32(acc0, madd32(a + k, b_lo, b_hi));
    load_q(b + k + 32, b_lo, b_hi);
    acc1 = _mm256_add_epi32(acc1, madd32(a + k + 32, b_lo, b_hi));
  }
  for (; k + 32 <= n; k += 32) {
    __m256i b_lo, b_hi;
    load_q(b + k, b_lo, b_hi);
    acc0 = _mm256_add_epi32(acc0, madd32(a + k, b_lo, b_hi));
  }
  return horizontal_sum(_mm256_add_epi32(acc0, acc1)) + tail(a, b, k, n);
}

void gemv_int8_avx2(const int8_t* w, int64_t row_begin, int64_t row_end, int64_t cols, const int8_t* q,
                    int32_t* acc) {
  // One row at a time: each thread reads one contiguous stream, prefetched ahead (measured faster than
  // interleaving four rows to share the widened activations).
  for (int64_t j = row_begin; j < row_end; ++j) acc[j] = dot_int8_avx2(w + j * cols, q, cols);
}

}  // namespace lpurt::chip::detail
