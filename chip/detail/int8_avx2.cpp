#include "chip/detail/int8_avx2.hpp"

#include <immintrin.h>

namespace lpurt::chip::detail {

namespace {

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
  const int64_t body = n - n % 32;
  __m256i acc = _mm256_setzero_si256();
  for (int64_t k = 0; k < body; k += 32) {
    __m256i b_lo, b_hi;
    load_q(b + k, b_lo, b_hi);
    acc = _mm256_add_epi32(acc, madd32(a + k, b_lo, b_hi));
  }
  return horizontal_sum(acc) + tail(a, b, body, n);
}

void gemv_int8_avx2(const int8_t* w, int64_t row_begin, int64_t row_end, int64_t cols, const int8_t* q,
                    int32_t* acc) {
  const int64_t body = cols - cols % 32;
  int64_t j = row_begin;
  // Four rows per pass share each widened slice of q; the weights stream through once.
  for (; j + 4 <= row_end; j += 4) {
    const int8_t* r0 = w + j * cols;
    const int8_t* r1 = r0 + cols;
    const int8_t* r2 = r1 + cols;
    const int8_t* r3 = r2 + cols;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < body; k += 32) {
      __m256i q_lo, q_hi;
      load_q(q + k, q_lo, q_hi);
      a0 = _mm256_add_epi32(a0, madd32(r0 + k, q_lo, q_hi));
      a1 = _mm256_add_epi32(a1, madd32(r1 + k, q_lo, q_hi));
      a2 = _mm256_add_epi32(a2, madd32(r2 + k, q_lo, q_hi));
      a3 = _mm256_add_epi32(a3, madd32(r3 + k, q_lo, q_hi));
    }
    acc[j] = horizontal_sum(a0) + tail(r0, q, body, cols);
    acc[j + 1] = horizontal_sum(a1) + tail(r1, q, body, cols);
    acc[j + 2] = horizontal_sum(a2) + tail(r2, q, body, cols);
    acc[j + 3] = horizontal_sum(a3) + tail(r3, q, body, cols);
  }
  for (; j < row_end; ++j) acc[j] = dot_int8_avx2(w + j * cols, q, cols);
}

}  // namespace lpurt::chip::detail
