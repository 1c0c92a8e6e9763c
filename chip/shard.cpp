#include "chip/shard.hpp"

#include <tbb/blocked_range2d.h>
#include <tbb/parallel_for.h>

#include <sys/mman.h>

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <new>

#include "chip/error.hpp"
#include "chip/kernels.hpp"

namespace lpurt::chip {

ShardWeights::Target ShardWeights::target(const TensorSlice& slice, const ShardRange& range) {
  const TensorId& id = slice.tensor;
  auto layer = [&]() -> LayerWeights& { return layers[static_cast<std::size_t>(id.layer - range.layer_begin())]; };
  auto expert = [&]() -> ExpertWeights& {
    return id.expert < 0 ? layer().ffn : layer().experts[static_cast<std::size_t>(id.expert)];
  };
  switch (id.kind) {
    case TensorKind::embedding: return {&embedding, nullptr};
    case TensorKind::attn_norm: return {nullptr, &layer().attn_norm};
    case TensorKind::wq: return {&layer().wq, nullptr};
    case TensorKind::wk: return {&layer().wk, nullptr};
    case TensorKind::wv: return {&layer().wv, nullptr};
    case TensorKind::wo: return {&layer().wo, nullptr};
    case TensorKind::ffn_norm: return {nullptr, &layer().ffn_norm};
    case TensorKind::w_gate: return {&expert().w_gate, nullptr};
    case TensorKind::w_up: return {&expert().w_up, nullptr};
    case TensorKind::w_down: return {&expert().w_down, nullptr};
    case TensorKind::router: return {nullptr, &layer().router};
    case TensorKind::final_norm: return {nullptr, &final_norm};
    case TensorKind::lm_head: return {&lm_head, nullptr};
    case TensorKind::wq_bias: return {nullptr, &layer().wq_bias};
    case TensorKind::wk_bias: return {nullptr, &layer().wk_bias};
    case TensorKind::wv_bias: return {nullptr, &layer().wv_bias};
    case TensorKind::q_norm: return {nullptr, &layer().q_norm};
    case TensorKind::k_norm: return {nullptr, &layer().k_norm};
  }
  LPURT_ASSERT(false);
}

namespace {
constexpr int64_t huge_page_bytes = int64_t{1} << 21;
constexpr int64_t matrix_alignment = 64;  // a cache line: every row stream of an aligned matrix starts on one
}  // namespace

WeightArena::WeightArena(int64_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  const auto rounded = static_cast<std::size_t>((bytes + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes);
  data_.reset(static_cast<int8_t*>(std::aligned_alloc(static_cast<std::size_t>(huge_page_bytes), rounded)));
  if (!data_) throw std::bad_alloc();
  // Before the first touch, so that the page faults below already map huge pages. Only advice: without
  // transparent huge pages the arena is ordinary memory.
  madvise(data_.get(), rounded, MADV_HUGEPAGE);
  std::memset(data_.get(), 0, rounded);
}

void WeightArena::Free::operator()(int8_t* p) const { std::free(p); }

namespace {

struct BufferSizes {
  int64_t kv_values = 0;       // per cache (K or V)
  int64_t rope_values = 0;     // per table
  int64_t float_values = 0;    // all float scratch
  int64_t int8_values = 0;
  int64_t int32_values = 0;
};

int64_t q8_width(const ModelConfig& c, const ShardRange& r) {
  return std::max({c.hidden_size, r.n_heads() * c.head_dim(), r.n_ffn()});
}
/// Rows of act_: one per token, or in an MoE layer one per token and chosen expert the chip holds.
int64_t act_rows(const ModelConfig& c, const ShardRange& r, int64_t block) {
  return c.is_moe() ? block * std::min(c.n_experts_per_token, r.n_experts()) : block;
}
int64_t acc_width(const ModelConfig& c, const ShardRange& r) {
  return std::max({c.hidden_size, r.n_heads() * c.head_dim(), r.n_kv_heads(c) * c.head_dim(), r.n_ffn(),
                   r.n_vocab()});
}

BufferSizes buffer_sizes(const ModelConfig& c, const ShardRange& r, const ShardShape& s) {
  const int64_t hd = c.head_dim();
  const int64_t b = s.block_tokens;
  BufferSizes z;
  z.kv_values = s.n_slots * r.n_attention_layers() * r.n_kv_heads(c) * s.context * hd;
  z.rope_values = s.context * (hd / 2);
  z.float_values = b * c.hidden_size                 // h
                   + b                               // row_amax
                   + 2 * b * r.n_heads() * hd        // q, attn
                   + 2 * b * r.n_kv_heads(c) * hd    // k, v
                   + r.n_heads() * s.context         // scores
                   + b * r.n_ffn()                   // gate
                   + act_rows(c, r, b) * r.n_ffn()   // act
                   + b                               // amax
                   + hd / 2                          // rope frequencies
                   + r.n_vocab()                     // logits
                   + c.n_experts + 2 * b * c.n_experts_per_token;  // router logits, chosen weights, slot amax
  z.int8_values = b * q8_width(c, r);
  z.int32_values = b * acc_width(c, r) + 2 * b * c.n_experts_per_token  // chosen experts, their act_ rows
                   + b * c.n_experts_per_token * c.hidden_size;         // slot sums
  return z;
}

}  // namespace

int64_t ffn_hand_off_values(const ModelConfig& c, const ShardRange& r, int64_t n) {
  if (!c.is_moe()) return n * (r.n_ffn() + 1);
  return 3 * n * c.n_experts_per_token + act_rows(c, r, n) * r.n_ffn();
}

SramUsage shard_sram_usage(const ModelConfig& c, const ShardRange& r, const ShardShape& s, const ChipSpec& spec) {
  const BufferSizes z = buffer_sizes(c, r, s);
  SramUsage u;
  u.weight_bytes = slice_weight_bytes(c, r);
  // The SRAM holds the shape's KV positions (a shared pool or every slot's context); z.kv_values is the host's.
  u.kv_cache_bytes =
      2 * r.n_attention_layers() * r.n_kv_heads(c) * c.head_dim() * s.kv_tokens() * spec.kv_bytes_per_value;
  // The host keeps float32; the deployed chip's activation buffers hold activation_bytes_per_value each.
  u.activation_bytes = spec.activation_bytes_per_value * (2 * z.rope_values + z.float_values) + z.int8_values + 4 * z.int32_values;
  u.program_bytes = spec.program_reserve_bytes;
  return u;
}

Shard::Shard(const ModelConfig& cfg, const ShardRange& range, const ShardShape& shape)
    : cfg_(cfg), range_(range), shape_(shape) {
  LPURT_ASSERT(shape.context >= 1 && shape.context <= cfg.max_seq_len);
  LPURT_ASSERT(shape.n_slots >= 1 && shape.block_tokens >= 1);
  const int64_t d = cfg.hidden_size;
  const int64_t hd = cfg.head_dim();
  n_kv_heads_ = range.n_kv_heads(cfg);
  kv_head_begin_ = range.kv_head_begin(cfg);

  // Layers touched and the experts held are indexed from their first; every slice sizes its own buffer.
  weights_.layers.resize(static_cast<std::size_t>(range.n_layers()));
  if (cfg.is_moe())
    for (int64_t layer = range.layer_begin(); layer < range.layer_end(); ++layer)
      if (range.has_ffn_in(layer) || range.has_ffn_out(layer)) weights_.layers[static_cast<std::size_t>(layer - range.layer_begin())].experts.resize(static_cast<std::size_t>(cfg.n_experts));
  int64_t arena_bytes = 0;
  auto aligned = [](int64_t bytes) { return (bytes + matrix_alignment - 1) / matrix_alignment * matrix_alignment; };
  for_each_slice(cfg, range, [&](const TensorSlice& slice) {
    if (weights_.target(slice, range).matrix != nullptr) arena_bytes += aligned(slice.rows() * slice.cols());
  });
  // One arena, matrices in slice order (the order a layer reads them), so the whole step is one stream.
  weight_arena_ = WeightArena(arena_bytes);
  int64_t next = 0;
  for_each_slice(cfg, range, [&](const TensorSlice& slice) {
    const ShardWeights::Target t = weights_.target(slice, range);
    if (t.matrix == nullptr) {
      t.floats->assign(static_cast<std::size_t>(slice.rows() * slice.cols()), 0.0f);
      return;
    }
    QuantizedMatrix& m = *t.matrix;
    m.rows = slice.rows();
    m.cols = slice.cols();
    m.weight = {weight_arena_.data() + next, m.rows * m.cols};
    m.scale.assign(static_cast<std::size_t>(m.rows), 0.0f);
    next += aligned(m.rows * m.cols);
  });

  const BufferSizes z = buffer_sizes(cfg, range, shape);
  const int64_t b = shape.block_tokens;
  auto floats = [](int64_t n) { return std::vector<float>(static_cast<std::size_t>(n), 0.0f); };
  k_cache_ = floats(z.kv_values);
  v_cache_ = floats(z.kv_values);
  rope_cos_ = floats(z.rope_values);
  rope_sin_ = floats(z.rope_values);
  rope_freq_ = floats(hd / 2);
  rope_frequencies(hd, cfg.rope_theta, cfg.rope_scaling, rope_freq_.data());
  rope_table(shape.context, hd / 2, rope_freq_.data(), rope_cos_.data(), rope_sin_.data());
  h_ = floats(b * d);
  row_amax_ = floats(b);
  q8_.assign(static_cast<std::size_t>(b * q8_width(cfg, range)), 0);
  acc_.assign(static_cast<std::size_t>(b * acc_width(cfg, range)), 0);
  q_ = floats(b * range.n_heads() * hd);
  k_ = floats(b * n_kv_heads_ * hd);
  v_ = floats(b * n_kv_heads_ * hd);
  attn_ = floats(b * range.n_heads() * hd);
  scores_ = floats(range.n_heads() * shape.context);
  gate_ = floats(b * range.n_ffn());
  act_ = floats(act_rows(cfg, range, b) * range.n_ffn());
  amax_ = floats(b);
  logits_ = floats(range.n_vocab());
  router_logits_ = floats(cfg.n_experts);
  const int64_t slots = b * cfg.n_experts_per_token;
  chosen_.assign(static_cast<std::size_t>(slots), 0);
  chosen_weight_ = floats(slots);
  moe_act_row_.assign(static_cast<std::size_t>(slots), -1);
  moe_amax_ = floats(slots);
  moe_sums_.assign(static_cast<std::size_t>(slots * d), 0);
}

const LayerWeights& Shard::layer_weights(int64_t layer) const {
  assert(layer >= range_.layer_begin() && layer < range_.layer_end());
  return weights_.layers[layer - range_.layer_begin()];
}

void Shard::embed(const int32_t* tokens, int64_t n, float* x) const {
  const int64_t d = cfg_.hidden_size;
  const QuantizedMatrix& e = weights_.embedding;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t row = tokens[t] - range_.embed_begin;
    assert(row >= 0 && row < range_.n_embed());
    embed_row(e.weight.data() + row * d, e.scale[row], d, x + t * d);
  }
}

void Shard::quantize_block(const float* in, int64_t cols, int64_t n) {
  for (int64_t t = 0; t < n; ++t) {
    row_amax_[t] = max_abs(in + t * cols, cols);
    quantize(in + t * cols, cols, row_amax_[t], q8_.data() + t * cols);
  }
}

void Shard::linear_block(const QuantizedMatrix& m, const float* in, int64_t n, float* y) {
  quantize_block(in, m.cols, n);
  quantized_linear_block(m, n, y);
}

void Shard::quantized_linear_block(const QuantizedMatrix& m, int64_t n, float* y) {
  gemm_int8(m.weight.data(), m.rows, m.cols, q8_.data(), n, acc_.data());
  for (int64_t t = 0; t < n; ++t)
    dequantize(acc_.data() + t * m.rows, m.rows, row_amax_[t], m.scale.data(),
               y + t * m.rows);
}

void Shard::attention_in(int64_t slot, int64_t layer, int64_t pos, int64_t n, const float* x) {
  assert(n <= shape_.block_tokens && pos + n <= shape_.context && slot < shape_.n_slots);
  const LayerWeights& w = layer_weights(layer);
  const int64_t d = cfg_.hidden_size;
  const int64_t hd = cfg_.head_dim();
  const int64_t n_heads = range_.n_heads();
  const int64_t half = hd / 2;
  for (int64_t t = 0; t < n; ++t) rmsnorm(x + t * d, w.attn_norm.data(), d, cfg_.norm_eps, h_.data() + t * d);
  // q, k and v share the quantized h: the same bytes feed three matmuls, as on the chip.
  quantize_block(h_.data(), d, n);
  quantized_linear_block(w.wq, n, q_.data());
  quantized_linear_block(w.wk, n, k_.data());
  quantized_linear_block(w.wv, n, v_.data());
  if (cfg_.attention_bias) {
    for (int64_t t = 0; t < n; ++t) {
      add_bias(w.wq_bias.data(), n_heads * hd, q_.data() + t * n_heads * hd);
      add_bias(w.wk_bias.data(), n_kv_heads_ * hd, k_.data() + t * n_kv_heads_ * hd);
      add_bias(w.wv_bias.data(), n_kv_heads_ * hd, v_.data() + t * n_kv_heads_ * hd);
    }
  }
  if (cfg_.qk_norm) {
    // In place, head by head: rmsnorm reads each element before it writes it.
    for (int64_t head = 0; head < n * n_heads; ++head)
      rmsnorm(q_.data() + head * hd, w.q_norm.data(), hd, cfg_.norm_eps, q_.data() + head * hd);
    for (int64_t head = 0; head < n * n_kv_heads_; ++head)
      rmsnorm(k_.data() + head * hd, w.k_norm.data(), hd, cfg_.norm_eps, k_.data() + head * hd);
  }

  assert(range_.has_attention(layer));
  const int64_t kv_layer = layer - range_.attention_layer_begin();
  const int64_t head_stride = shape_.context * hd;
  const int64_t cache_base = (slot * range_.n_attention_layers() + kv_layer) * n_kv_heads_ * head_stride;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t p = pos + t;
    rope_apply(q_.data() + t * n_heads * hd, n_heads, hd, rope_cos_.data() + p * half, rope_sin_.data() + p * half);
    rope_apply(k_.data() + t * n_kv_heads_ * hd, n_kv_heads_, hd, rope_cos_.data() + p * half,
               rope_sin_.data() + p * half);
    for (int64_t kvh = 0; kvh < n_kv_heads_; ++kvh) {
      const std::size_t dst = static_cast<std::size_t>(cache_base + kvh * head_stride + p * hd);
      std::memcpy(&k_cache_[dst], k_.data() + (t * n_kv_heads_ + kvh) * hd, sizeof(float) * static_cast<std::size_t>(hd));
      std::memcpy(&v_cache_[dst], v_.data() + (t * n_kv_heads_ + kvh) * hd, sizeof(float) * static_cast<std::size_t>(hd));
    }
  }
  // One task per query head; each owns its row of the score scratch and walks the block's tokens in order.
  tbb::parallel_for(int64_t{0}, n_heads, [&](int64_t lh) {
    const int64_t kv_local = (range_.head_begin + lh) / cfg_.heads_per_kv_head() - kv_head_begin_;
    const float* k = k_cache_.data() + cache_base + kv_local * head_stride;
    const float* v = v_cache_.data() + cache_base + kv_local * head_stride;
    float* scores = scores_.data() + lh * shape_.context;
    for (int64_t t = 0; t < n; ++t)
      attention_head(q_.data() + (t * n_heads + lh) * hd, k, v, pos + t + 1, hd, scores,
                     attn_.data() + (t * n_heads + lh) * hd);
  });
  for (int64_t t = 0; t < n; ++t) amax_[t] = max_abs(attn_.data() + t * n_heads * hd, n_heads * hd);
}

void Shard::attention_out_partial(int64_t layer, int64_t n, const float* amax) {
  const QuantizedMatrix& wo = layer_weights(layer).wo;
  for (int64_t t = 0; t < n; ++t) quantize(attn_.data() + t * wo.cols, wo.cols, amax[t], q8_.data() + t * wo.cols);
  gemm_int8(wo.weight.data(), wo.rows, wo.cols, q8_.data(), n, acc_.data());
}

void Shard::add_attention_output(int64_t layer, int64_t n, const int32_t* sums, const float* amax, float* x) const {
  const QuantizedMatrix& wo = layer_weights(layer).wo;
  for (int64_t t = 0; t < n; ++t) dequantize_add(sums + t * wo.rows, wo.rows, amax[t], wo.scale.data(), x + t * wo.rows);
}

void Shard::ffn_in(int64_t layer, int64_t n, const float* x) {
  const LayerWeights& w = layer_weights(layer);
  const int64_t d = cfg_.hidden_size;
  const int64_t f = range_.n_ffn();
  for (int64_t t = 0; t < n; ++t) rmsnorm(x + t * d, w.ffn_norm.data(), d, cfg_.norm_eps, h_.data() + t * d);
  quantize_block(h_.data(), d, n);
  quantized_linear_block(w.ffn.w_gate, n, gate_.data());
  quantized_linear_block(w.ffn.w_up, n, act_.data());
  for (int64_t t = 0; t < n; ++t) {
    silu_mul(gate_.data() + t * f, act_.data() + t * f, f, act_.data() + t * f);
    amax_[t] = max_abs(act_.data() + t * f, f);
  }
}

void Shard::ffn_out_partial(int64_t layer, int64_t n, const float* amax) {
  const QuantizedMatrix& wd = layer_weights(layer).ffn.w_down;
  for (int64_t t = 0; t < n; ++t) quantize(act_.data() + t * wd.cols, wd.cols, amax[t], q8_.data() + t * wd.cols);
  gemm_int8(wd.weight.data(), wd.rows, wd.cols, q8_.data(), n, acc_.data());
}

void Shard::add_ffn_output(int64_t layer, int64_t n, const int32_t* sums, const float* amax, float* x) const {
  const QuantizedMatrix& wd = layer_weights(layer).ffn.w_down;
  for (int64_t t = 0; t < n; ++t) dequantize_add(sums + t * wd.rows, wd.rows, amax[t], wd.scale.data(), x + t * wd.rows);
}

void Shard::moe_in(int64_t layer, int64_t n, const float* x) {
  const LayerWeights& w = layer_weights(layer);
  const int64_t d = cfg_.hidden_size;
  const int64_t k = cfg_.n_experts_per_token;
  const int64_t f = range_.n_ffn();
  int64_t next_row = 0;
  for (int64_t t = 0; t < n; ++t) {
    float* h = h_.data() + t * d;
    rmsnorm(x + t * d, w.ffn_norm.data(), d, cfg_.norm_eps, h);
    route_top_k(w.router.data(), h, cfg_.n_experts, d, k, cfg_.norm_topk_prob, router_logits_.data(),
                chosen_.data() + t * k, chosen_weight_.data() + t * k);
    bool quantized = false;  // h is quantized once per token, for the first held expert
    for (int64_t c = 0; c < k; ++c) {
      const int64_t slot = t * k + c;
      const int64_t e = chosen_[static_cast<std::size_t>(slot)];
      if (e < range_.expert_begin || e >= range_.expert_end) {
        moe_act_row_[static_cast<std::size_t>(slot)] = -1;
        moe_amax_[static_cast<std::size_t>(slot)] = 0.0f;
        continue;
      }
      if (!quantized) quantize_block(h, d, 1);
      quantized = true;
      const ExpertWeights& expert = w.experts[static_cast<std::size_t>(e)];
      float* act = act_.data() + next_row * f;
      quantized_linear_block(expert.w_gate, 1, gate_.data());
      quantized_linear_block(expert.w_up, 1, act);
      silu_mul(gate_.data(), act, f, act);
      moe_amax_[static_cast<std::size_t>(slot)] = max_abs(act, f);
      moe_act_row_[static_cast<std::size_t>(slot)] = static_cast<int32_t>(next_row++);
    }
  }
}

void Shard::place_moe_slots(int64_t n) {
  // A hand-off that arrived corrupted (replayed, its results discarded) may hold any indices: an expert
  // out of range reads as expert 0, and a token's held slots stop at the rows act_ has for it, so that the
  // step runs to its end. A routing moe_in wrote (distinct experts per token) is numbered as moe_in did.
  const int64_t k = cfg_.n_experts_per_token, rows_per_token = std::min(k, range_.n_experts());
  int32_t next_row = 0;
  for (int64_t t = 0; t < n; ++t) {
    int64_t held = 0;
    for (int64_t c = 0; c < k; ++c) {
      const auto slot = static_cast<std::size_t>(t * k + c);
      int32_t& e = chosen_[slot];
      if (e < 0 || e >= cfg_.n_experts) e = 0;
      const bool placed = e >= range_.expert_begin && e < range_.expert_end && held < rows_per_token;
      moe_act_row_[slot] = placed ? next_row++ : -1;
      held += placed ? 1 : 0;
    }
  }
}

void Shard::moe_out_partial(int64_t layer, int64_t n, const float* amax) {
  const LayerWeights& w = layer_weights(layer);
  const int64_t d = cfg_.hidden_size;
  const int64_t k = cfg_.n_experts_per_token;
  const int64_t f = range_.n_ffn();
  for (int64_t slot = 0; slot < n * k; ++slot) {
    int32_t* sums = moe_sums_.data() + slot * d;
    const int32_t row = moe_act_row_[static_cast<std::size_t>(slot)];
    if (row < 0) {
      std::fill(sums, sums + d, 0);
      continue;
    }
    const QuantizedMatrix& down = w.experts[static_cast<std::size_t>(chosen_[static_cast<std::size_t>(slot)])].w_down;
    quantize(act_.data() + row * f, f, amax[slot], q8_.data());
    gemm_int8(down.weight.data(), down.rows, down.cols, q8_.data(), 1, sums);
  }
}

void Shard::add_moe_output(int64_t layer, int64_t n, const int32_t* sums, const float* amax, float* x) const {
  const LayerWeights& w = layer_weights(layer);
  const int64_t d = cfg_.hidden_size;
  const int64_t k = cfg_.n_experts_per_token;
  for (int64_t t = 0; t < n; ++t) {
    float* xt = x + t * d;
    for (int64_t i = 0; i < d; ++i) {
      float out = 0.0f;
      for (int64_t c = 0; c < k; ++c) {
        const int64_t slot = t * k + c;
        const float* row_scale = w.experts[static_cast<std::size_t>(chosen_[static_cast<std::size_t>(slot)])].w_down.scale.data();
        const float y = (static_cast<float>(sums[slot * d + i]) * quantization_scale(amax[slot])) * row_scale[i];
        out += chosen_weight_[static_cast<std::size_t>(slot)] * y;
      }
      xt[i] += out;
    }
  }
}

void Shard::logits(const float* x) {
  rmsnorm(x, weights_.final_norm.data(), cfg_.hidden_size, cfg_.norm_eps, h_.data());
  linear_block(weights_.lm_head, h_.data(), 1, logits_.data());
}

}  // namespace lpurt::chip
