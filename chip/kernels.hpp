#pragma once
/// \file
/// Functional kernels implementing SPEC "Numerics (W8A8, exact integer matmuls)" bit for bit.
/// Plain loops over flat buffers with explicit sizes. Every output element is computed by exactly one
/// thread in a fixed order, so results never depend on the thread count. Floating point is float32
/// throughout, compiled without contraction (see cmake/LpurtWarnings.cmake), so a value computed for one
/// token alone equals the same value computed inside a block of tokens.
///
/// A linear layer is split in three so that tensor parallelism can agree on the quantization scale and
/// sum int32 partials across chips exactly:
/// \code
///   float amax = max_abs(v, n);               // a max is order-free: reduce it across chips if v is split
///   quantize(v, n, amax, q);                  // q: int8 [n]
///   gemv_int8(w, rows, cols, q, acc);         // acc: int32 [rows], exact; sum partials across chips
///   dequantize(acc, rows, amax, scale, y);    // y_j = (float(acc_j) * s) * scale_j
/// \endcode

#include <cstdint>

#include "chip/model_config.hpp"

namespace lpurt::chip {

/// Largest |v_i|; exact and independent of evaluation order.
float max_abs(const float* v, int64_t n);
/// SPEC quantize: s = amax / 127, or 1 when amax == 0.
float quantization_scale(float amax);
/// SPEC quantize: q_i = clamp(rint(v_i / s), -127, 127) with s = quantization_scale(amax) (round half to even).
void quantize(const float* v, int64_t n, float amax, int8_t* q);

/// True when the int8 products use the AVX2 kernels: the CPU has AVX2 and LPURT_KERNELS is not
/// "portable". Both paths give the same bits (integer sums are exact).
bool use_avx2();
/// "avx2" or "portable".
const char* int8_kernel_name();
/// The portable reference: acc[j] = sum_k w[j*cols + k] * q[k], one thread, plain loop.
void gemv_int8_portable(const int8_t* w, int64_t rows, int64_t cols, const int8_t* q, int32_t* acc);

/// acc[j] = sum_k w[j*cols + k] * q[k] for j in [0, rows); int32, exact. w: int8 [rows, cols].
void gemv_int8(const int8_t* w, int64_t rows, int64_t cols, const int8_t* q, int32_t* acc);
/// Block of n_tokens vectors: acc[t*rows + j] = sum_k w[j*cols + k] * q[t*cols + k].
/// w: int8 [rows, cols], q: int8 [n_tokens, cols], acc: int32 [n_tokens, rows]. Each weight row is
/// read once for all tokens (prefill); each element equals the gemv_int8 result exactly.
void gemm_int8(const int8_t* w, int64_t rows, int64_t cols, const int8_t* q, int64_t n_tokens, int32_t* acc);
/// y[j] = (float(acc[j]) * s) * row_scale[j], s = quantization_scale(amax).
void dequantize(const int32_t* acc, int64_t rows, float amax, const float* row_scale, float* y);
/// Same, adding into y (the residual stream): y[j] += (float(acc[j]) * s) * row_scale[j].
void dequantize_add(const int32_t* acc, int64_t rows, float amax, const float* row_scale, float* y);

/// out_i = x_i * (1 / sqrt(sum_i(x_i^2) / n + eps)) * g_i; sum in index order. out may be x (each element
/// is read before it is written).
void rmsnorm(const float* x, const float* g, int64_t n, float eps, float* out);

/// y_i += bias_i (SPEC format 2 attention_bias, after the linear). y, bias: float [n].
void add_bias(const float* bias, int64_t n, float* y);

/// RoPE frequencies f_i = theta^(-2i/head_dim) for i < head_dim / 2 (float32 powf), with SPEC's llama3
/// scaling applied in float64 and rounded once to float32 when `scaling` asks for it. freq: float [head_dim / 2].
void rope_frequencies(int64_t head_dim, float theta, const RopeScaling& scaling, float* freq);
/// RoPE angle table for positions [0, n_positions): cos/sin float [n_positions, n_freq],
/// angle(p, i) = float(p) * freq[i]. freq: float [n_freq].
void rope_table(int64_t n_positions, int64_t n_freq, const float* freq, float* cos_out, float* sin_out);
/// Rotates interleaved pairs (2i, 2i+1) of each of n_heads heads of v: float [n_heads, head_dim], using
/// one position's row of the table (cos, sin: float [head_dim / 2]).
void rope_apply(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin);

/// One query head over its KV head's cache: scores_j = q . k_j / sqrt(head_dim) for j < n_ctx,
/// softmax (max subtracted), out = sum_j p_j v_j in order of j.
/// q: float [head_dim], k, v: float [n_ctx, head_dim] (row stride head_dim), scores: scratch float [n_ctx].
void attention_head(const float* q, const float* k, const float* v, int64_t n_ctx, int64_t head_dim,
                    float* scores, float* out);

/// out_i = silu(gate_i) * up_i with silu(z) = z / (1 + exp(-z)).
void silu_mul(const float* gate, const float* up, int64_t n, float* out);

/// Embedding row: x_i = float(e_i) * scale. e: int8 [n].
void embed_row(const int8_t* e, float scale, int64_t n, float* x);

/// Index of the largest value; ties go to the lowest index.
int64_t argmax(const float* v, int64_t n);

/// MoE router: logits = router . h (float32, index order), the k largest (ties: lower index); weights are
/// the softmax over those k logits (norm_topk_prob, Mixtral and Qwen3-MoE), or the softmax over all
/// n_experts logits read at the k chosen (max and sum in index order). experts: int [k] in ascending
/// expert index; weights: float [k] matching. router: float [n_experts, dim]; logits: scratch float [n_experts].
void route_top_k(const float* router, const float* h, int64_t n_experts, int64_t dim, int64_t k, bool norm_topk_prob,
                 float* logits, int32_t* experts, float* weights);

}  // namespace lpurt::chip
