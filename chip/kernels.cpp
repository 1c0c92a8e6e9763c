#include "chip/kernels.hpp"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "chip/detail/int8_avx2.hpp"

namespace lpurt::chip {

const char* int8_kernel_name() { return use_avx2() ? "avx2" : "portable"; }

bool use_avx2() {
  // Chosen once: AVX2 where the CPU has it, unless LPURT_KERNELS=portable asks for the fallback.
  static const bool avx2 = [] {
    const char* choice = std::getenv("LPURT_KERNELS");
    if (choice != nullptr && std::string(choice) == "portable") return false;
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return avx2;
}

namespace {


inline int32_t dot_int8(const int8_t* a, const int8_t* b, int64_t n) {
  int32_t sum = 0;
  for (int64_t k = 0; k < n; ++k) sum += static_cast<int32_t>(a[k]) * static_cast<int32_t>(b[k]);
  return sum;
}

template <typename Body>
void for_rows(int64_t rows, int64_t work_per_row, Body body) {
  // Small matrices run inline: a task spawn costs more than the work.
  if (rows * work_per_row < (int64_t{1} << 15)) {
    body(int64_t{0}, rows);
    return;
  }
  // One contiguous block of rows per thread: each thread streams one long run of weights, which the
  // prefetches follow without a restart per task (measured 6-8% more GB/s over a decode step's matrices
  // than 64-row tasks shared dynamically).
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, rows),
                    [&](const tbb::blocked_range<int64_t>& r) { body(r.begin(), r.end()); }, tbb::static_partitioner());
}

}  // namespace

float max_abs(const float* v, int64_t n) {
  float a = 0.0f;
  for (int64_t i = 0; i < n; ++i) a = std::max(a, std::fabs(v[i]));
  return a;
}

float quantization_scale(float amax) { return amax == 0.0f ? 1.0f : amax / 127.0f; }

void quantize(const float* v, int64_t n, float amax, int8_t* q) {
  if (amax == 0.0f) {
    std::fill(q, q + n, int8_t{0});
    return;
  }
  const float s = quantization_scale(amax);
  // Rounds half to even like std::rint in the default rounding mode (which lpurt never changes), without
  // its library call (baseline x86-64 has no rounding instruction), so the loop vectorizes: adding and
  // subtracting 1.5 x 2^23 leaves no fraction bits, and the sum's rounding is the one wanted. Exact for
  // |x| < 2^22; larger values, infinities and NaN come out beyond +-127 or NaN, as rint's would, and
  // are clamped alike.
  constexpr float round_magic = 12582912.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float r = (v[i] / s + round_magic) - round_magic;
    // Written so that NaN (only from a corrupted transfer, before its replay) also lands in range.
    q[i] = static_cast<int8_t>(r > 127.0f ? 127.0f : (r >= -127.0f ? r : -127.0f));
  }
}

void gemv_int8_portable(const int8_t* w, int64_t rows, int64_t cols, const int8_t* q, int32_t* acc) {
  for (int64_t j = 0; j < rows; ++j) acc[j] = dot_int8(w + j * cols, q, cols);
}

void gemv_int8(const int8_t* w, int64_t rows, int64_t cols, const int8_t* q, int32_t* acc) {
  const bool avx2 = use_avx2();
  for_rows(rows, cols, [=](int64_t begin, int64_t end) {
    if (avx2) {
      detail::gemv_int8_avx2(w, begin, end, cols, q, acc);
      return;
    }
    for (int64_t j = begin; j < end; ++j) acc[j] = dot_int8(w + j * cols, q, cols);
  });
}

void gemm_int8(const int8_t* w, int64_t rows, int64_t cols, const int8_t* q, int64_t n_tokens, int32_t* acc) {
  const bool avx2 = use_avx2();
  for_rows(rows, cols * n_tokens, [=](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int8_t* row = w + j * cols;
      for (int64_t t = 0; t < n_tokens; ++t)
        acc[t * rows + j] = avx2 ? detail::dot_int8_avx2(row, q + t * cols, cols) : dot_int8(row, q + t * cols, cols);
    }
  });
}

void dequantize(const int32_t* acc, int64_t rows, float amax, const float* row_scale, float* y) {
  const float s = quantization_scale(amax);
  for (int64_t j = 0; j < rows; ++j) y[j] = (static_cast<float>(acc[j]) * s) * row_scale[j];
}

void dequantize_add(const int32_t* acc, int64_t rows, float amax, const float* row_scale, float* y) {
  const float s = quantization_scale(amax);
  for (int64_t j = 0; j < rows; ++j) y[j] += (static_cast<float>(acc[j]) * s) * row_scale[j];
}

void rmsnorm(const float* x, const float* g, int64_t n, float eps, float* out) {
  float sum_squares = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum_squares += x[i] * x[i];
  const float inv_rms = 1.0f / std::sqrt(sum_squares / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv_rms * g[i];
}

void add_bias(const float* bias, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] += bias[i];
}

void rope_frequencies(int64_t head_dim, float theta, const RopeScaling& scaling, float* freq) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = -static_cast<float>(2 * i) / static_cast<float>(head_dim);
    freq[i] = std::pow(theta, exponent);
  }
  if (scaling.type != RopeScalingType::llama3) return;
  // SPEC: wavelengths shorter than orig / high_freq_factor keep f, longer than orig / low_freq_factor
  // get f / factor, and the band between blends the two linearly in orig / wavelength.
  constexpr double two_pi = 6.283185307179586476925286766559;
  const double orig = static_cast<double>(scaling.original_max_position);
  const double low_wavelength = orig / scaling.high_freq_factor;
  const double high_wavelength = orig / scaling.low_freq_factor;
  for (int64_t i = 0; i < half; ++i) {
    // From the float64 power, so that each frequency is rounded to float32 once.
    const double exponent = static_cast<double>(-static_cast<float>(2 * i) / static_cast<float>(head_dim));
    const double f = std::pow(static_cast<double>(theta), exponent);
    const double wavelength = two_pi / f;
    double scaled = f;
    if (wavelength > high_wavelength) {
      scaled = f / scaling.factor;
    } else if (wavelength >= low_wavelength) {
      const double s = (orig / wavelength - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor);
      scaled = (1.0 - s) * f / scaling.factor + s * f;
    }
    freq[i] = static_cast<float>(scaled);
  }
}

void rope_table(int64_t n_positions, int64_t n_freq, const float* freq, float* cos_out, float* sin_out) {
  for (int64_t p = 0; p < n_positions; ++p) {
    for (int64_t i = 0; i < n_freq; ++i) {
      const float angle = static_cast<float>(p) * freq[i];
      cos_out[p * n_freq + i] = std::cos(angle);
      sin_out[p * n_freq + i] = std::sin(angle);
    }
  }
}

void rope_apply(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* head = v + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float a = head[2 * i];
      const float b = head[2 * i + 1];
      head[2 * i] = a * cos[i] - b * sin[i];
      head[2 * i + 1] = a * sin[i] + b * cos[i];
    }
  }
}

void attention_head(const float* q, const float* k, const float* v, int64_t n_ctx, int64_t head_dim,
                    float* scores, float* out) {
  const float sqrt_head_dim = std::sqrt(static_cast<float>(head_dim));
  // Eight keys at a time: each score is still its own sum in index order (the same bits), but eight
  // independent chains of adds overlap instead of each waiting for the previous add.
  constexpr int64_t keys = 8;
  int64_t key = 0;
  for (; key + keys <= n_ctx; key += keys) {
    const float* kj = k + key * head_dim;
    float dot[keys] = {};
    for (int64_t d = 0; d < head_dim; ++d)
      for (int64_t i = 0; i < keys; ++i) dot[i] += q[d] * kj[i * head_dim + d];
    for (int64_t i = 0; i < keys; ++i) scores[key + i] = dot[i] / sqrt_head_dim;
  }
  for (; key < n_ctx; ++key) {
    const float* kj = k + key * head_dim;
    float dot = 0.0f;
    for (int64_t d = 0; d < head_dim; ++d) dot += q[d] * kj[d];
    scores[key] = dot / sqrt_head_dim;
  }
  float max_score = -INFINITY;
  for (int64_t j = 0; j < n_ctx; ++j) max_score = std::max(max_score, scores[j]);
  float sum = 0.0f;
  for (int64_t j = 0; j < n_ctx; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  std::fill(out, out + head_dim, 0.0f);
  for (int64_t j = 0; j < n_ctx; ++j) {
    const float p = scores[j] / sum;
    const float* vj = v + j * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) out[d] += p * vj[d];
  }
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float z = gate[i];
    out[i] = z / (1.0f + std::exp(-z)) * up[i];
  }
}

void embed_row(const int8_t* e, float scale, int64_t n, float* x) {
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(e[i]) * scale;
}

int64_t argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

void route_top_k(const float* router, const float* h, int64_t n_experts, int64_t dim, int64_t k, bool norm_topk_prob,
                 float* logits, int32_t* experts, float* weights) {
  for (int64_t e = 0; e < n_experts; ++e) {
    float dot = 0.0f;
    for (int64_t i = 0; i < dim; ++i) dot += router[e * dim + i] * h[i];
    logits[e] = dot;
  }
  // Selection by repeated argmax over the not-yet-chosen experts: strict '>' keeps the lower index on ties.
  int64_t n_chosen = 0;
  for (; n_chosen < k; ++n_chosen) {
    int64_t best = -1;
    for (int64_t e = 0; e < n_experts; ++e) {
      bool taken = false;
      for (int64_t c = 0; c < n_chosen; ++c) taken = taken || experts[c] == e;
      if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
    }
    experts[n_chosen] = static_cast<int32_t>(best);
  }
  std::sort(experts, experts + k);
  if (!norm_topk_prob) {
    // Softmax over every expert's logit, read at the chosen ones.
    float max_logit = -INFINITY;
    for (int64_t e = 0; e < n_experts; ++e) max_logit = std::max(max_logit, logits[e]);
    float sum = 0.0f;
    for (int64_t e = 0; e < n_experts; ++e) sum += std::exp(logits[e] - max_logit);
    for (int64_t c = 0; c < k; ++c) weights[c] = std::exp(logits[experts[c]] - max_logit) / sum;
    return;
  }
  // Softmax over the k chosen logits, summed in ascending expert order.
  float max_logit = -INFINITY;
  for (int64_t c = 0; c < k; ++c) max_logit = std::max(max_logit, logits[experts[c]]);
  float sum = 0.0f;
  for (int64_t c = 0; c < k; ++c) {
    weights[c] = std::exp(logits[experts[c]] - max_logit);
    sum += weights[c];
  }
  for (int64_t c = 0; c < k; ++c) weights[c] /= sum;
}

}  // namespace lpurt::chip
