#pragma once
/// \file
/// What one chip holds (its ShardRange, chip/split.hpp): its weights, KV cache and working buffers
/// (Shard), and the compute phases of a transformer layer on that chip.
///
/// A layer runs as phases so that the chips of a tensor-parallel group can combine their partial results
/// exactly between phases (a max of per-token amax values, a sum of int32 partial sums):
/// \code
///   shard.attention_in(slot, layer, pos, n, x);           // -> attention_out() [n, local heads*hd], amax()
///   /* group: amax = max over chips of shard.amax() */
///   shard.attention_out_partial(layer, n, amax);         // -> partial_sums() int32 [n, D]
///   /* group: sums = sum over chips of shard.partial_sums() */
///   shard.add_attention_output(layer, n, sums, amax, x); // x += dequantized wo output (same on every chip)
///   shard.ffn_in(layer, n, x); ... shard.ffn_out_partial(...); ... shard.add_ffn_output(...);
/// \endcode
/// With one chip the "group" steps are the identity. All buffers are allocated by the constructor; the
/// phases allocate nothing.

#include <cstdint>
#include <memory>
#include <vector>

#include "chip/hardware.hpp"
#include "chip/model_config.hpp"
#include "chip/split.hpp"
#include "chip/sram.hpp"

namespace lpurt::chip {

/// Memory for int8 weights: 2 MB aligned and advised for transparent huge pages (madvise
/// MADV_HUGEPAGE, honoured when /sys/kernel/mm/transparent_hugepage/enabled is `always` or `madvise`). A
/// decode step streams every weight byte once; on 4 KB pages that is a TLB miss every 4 KB, each a page
/// walk (a two-level one in a virtual machine) in the middle of the stream. Zero-filled.
class WeightArena {
 public:
  WeightArena() = default;
  explicit WeightArena(int64_t bytes);
  int8_t* data() const { return data_.get(); }
  int64_t bytes() const { return bytes_; }

 private:
  struct Free {
    void operator()(int8_t* p) const;
  };
  std::unique_ptr<int8_t, Free> data_;
  int64_t bytes_ = 0;
};

/// int8 elements a QuantizedMatrix views inside its Shard's WeightArena.
struct Int8View {
  int8_t* begin = nullptr;
  int64_t n = 0;
  int8_t* data() const { return begin; }
  int64_t size() const { return n; }
};

/// An int8 weight matrix with per-row float32 scales, as a chip holds it.
struct QuantizedMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  Int8View weight;           ///< [rows, cols] row-major, in the Shard's WeightArena
  std::vector<float> scale;  ///< [rows]
};

struct ExpertWeights {
  QuantizedMatrix w_gate;  ///< [n_ffn, D]
  QuantizedMatrix w_up;    ///< [n_ffn, D]
  QuantizedMatrix w_down;  ///< [D, n_ffn]
};

struct LayerWeights {
  std::vector<float> attn_norm;  ///< [D]
  QuantizedMatrix wq;            ///< [n_heads*hd, D]: rows of the chip's query heads
  QuantizedMatrix wk;            ///< [n_kv_heads*hd, D]
  QuantizedMatrix wv;            ///< [n_kv_heads*hd, D]
  std::vector<float> wq_bias;    ///< [n_heads*hd] (attention_bias)
  std::vector<float> wk_bias;    ///< [n_kv_heads*hd] (attention_bias)
  std::vector<float> wv_bias;    ///< [n_kv_heads*hd] (attention_bias)
  std::vector<float> q_norm;     ///< [hd] (qk_norm)
  std::vector<float> k_norm;     ///< [hd] (qk_norm)
  QuantizedMatrix wo;            ///< [D, n_heads*hd]: the columns of the chip's query heads
  std::vector<float> ffn_norm;   ///< [D]
  ExpertWeights ffn;             ///< dense FFN
  std::vector<float> router;     ///< [E, D] (MoE)
  std::vector<ExpertWeights> experts;  ///< [n_experts] (MoE): experts expert_begin .. expert_end - 1
};

struct ShardWeights {
  QuantizedMatrix embedding;       ///< [n_embed, D]: rows embed_begin..embed_end
  std::vector<LayerWeights> layers;///< [n_layers] layers touched, layer_begin() first; parts not held stay empty
  std::vector<float> final_norm;   ///< [D] if ShardRange::final_norm
  QuantizedMatrix lm_head;         ///< [n_vocab, D]

  /// Where a slice of `range` is stored: a quantized matrix, or (norms, router) a float vector; the other
  /// pointer is null.
  struct Target {
    QuantizedMatrix* matrix = nullptr;
    std::vector<float>* floats = nullptr;
  };
  Target target(const TensorSlice& slice, const ShardRange& range);
};

/// Sizes that fix a shard's buffers.
struct ShardShape {
  int64_t context = 0;       ///< KV positions per sequence (<= max_seq_len)
  int64_t n_slots = 1;       ///< sequences resident at once (batch)
  int64_t block_tokens = 1;  ///< largest token block of one phase call (prefill chunk)
  /// KV positions the SRAM holds for all the slots together, a pool of pages they share (serving:
  /// partition/serving.hpp); 0: each slot its whole context. The host keeps each slot's whole context
  /// either way (host memory is not the modelled SRAM).
  int64_t kv_pool_tokens = 0;
  /// KV positions the SRAM holds: the pool, else n_slots x context.
  int64_t kv_tokens() const { return kv_pool_tokens > 0 ? kv_pool_tokens : n_slots * context; }
};

/// Values a stage that begins at a layer's FFN output half receives for n tokens, besides the
/// activations, from the previous stage's chip with the same `range` of FFN columns and experts (the same
/// tp rank): the FFN input half's results its w_down and residual need, as the host keeps them (4 bytes
/// each). Dense: the SiLU output [n, n_ffn], then the stage's amax [n]. MoE: each token's chosen experts
/// [n, k] (int32) and their weights [n, k], the stage's per-slot amax [n, k], then the SiLU rows of the
/// slots the chip holds [n * min(k, experts held), n_ffn]: as many rows as a block may fill (the routing
/// decides how many it does), as a static schedule moves them.
int64_t ffn_hand_off_values(const ModelConfig& cfg, const ShardRange& range, int64_t n);

/// SRAM a shard needs: its weights, KV cache and buffers exactly as Shard allocates them.
SramUsage shard_sram_usage(const ModelConfig& cfg, const ShardRange& range, const ShardShape& shape,
                           const ChipSpec& spec);

class Shard {
 public:
  Shard(const ModelConfig& cfg, const ShardRange& range, const ShardShape& shape);

  const ModelConfig& config() const { return cfg_; }
  const ShardRange& range() const { return range_; }
  const ShardShape& shape() const { return shape_; }
  /// Weight storage, sized by the constructor; a loader fills it before the first phase runs.
  ShardWeights& weights() { return weights_; }
  const ShardWeights& weights() const { return weights_; }

  /// x[t] = embedding row of tokens[t]; x: float [n, D]. Every token must be in [embed_begin, embed_end).
  void embed(const int32_t* tokens, int64_t n, float* x) const;

  /// Attention up to the heads' outputs for n tokens of sequence `slot` at positions [pos, pos + n):
  /// norm, q/k/v (+ bias), per-head q/k norm, RoPE, KV-cache append, causal attention of the chip's heads.
  void attention_in(int64_t slot, int64_t layer, int64_t pos, int64_t n, const float* x);
  /// wo partial sums over the chip's heads, quantized with the group's per-token amax [n].
  void attention_out_partial(int64_t layer, int64_t n, const float* amax);
  /// x += dequantized wo output from the group's summed partials sums [n, D] and amax [n].
  void add_attention_output(int64_t layer, int64_t n, const int32_t* sums, const float* amax, float* x) const;

  /// FFN up to the activation of the chip's columns: norm, gate/up, SiLU.
  void ffn_in(int64_t layer, int64_t n, const float* x);
  void ffn_out_partial(int64_t layer, int64_t n, const float* amax);
  void add_ffn_output(int64_t layer, int64_t n, const int32_t* sums, const float* amax, float* x) const;

  /// MoE FFN up to the activations, for n tokens: norm, router (every chip routes alike), and for each
  /// token's k chosen experts (slot c in ascending expert index) that this chip holds, gate/up/SiLU of
  /// its FFN columns of the expert. moe_amax(): float [n, k], each slot's activation amax over those
  /// columns, 0 for a slot the chip does not hold; the max over the stage's chips is the slot's amax
  /// over the expert's whole width.
  void moe_in(int64_t layer, int64_t n, const float* x);
  /// w_down partial sums of the slots this chip holds, their activations quantized with the stage's
  /// amax [n, k]. Result in moe_sums(): int32 [n, k, D], 0 for a slot not held (the identity of the
  /// sum); a sum over the stage's chips gives every slot's full int32 sums exactly.
  void moe_out_partial(int64_t layer, int64_t n, const float* amax);
  /// x[t] += (0 + y_0 + y_1 + ...) for t < n, y_c = weight_c x (float(sums) x s_c) x w_down scale of
  /// slot c's expert, s_c from amax [n, k]: the slots dequantized from the stage's summed int32 sums
  /// [n, k, D] and summed in ascending expert order.
  void add_moe_output(int64_t layer, int64_t n, const int32_t* sums, const float* amax, float* x) const;

  /// Logits of the chip's vocabulary rows for one token: final norm, quantize, lm_head.
  /// Result in logits(), float [n_vocab].
  void logits(const float* x);

  /// The FFN input half's results, writable: a stage cut inside an FFN hands them to the next stage's
  /// chip of the same tp rank (the same FFN columns and experts), which writes them here before its w_down
  /// (ffn_hand_off_values): the SiLU output, and with one chip a stage its amax (with more, the engine
  /// keeps the stage's gathered amax); in an MoE layer also the routing, after which place_moe_slots.
  float* ffn_act_buffer() { return act_.data(); }  ///< [n, n_ffn] (MoE: [n * min(k, experts held), n_ffn])
  float* amax_buffer() { return amax_.data(); }    ///< [n]
  int32_t* moe_chosen_buffer() { return chosen_.data(); }       ///< [n, k] each token's experts, ascending
  float* moe_weight_buffer() { return chosen_weight_.data(); }  ///< [n, k] their weights
  float* moe_amax_buffer() { return moe_amax_.data(); }         ///< [n, k]
  /// After a hand-off wrote the routing of n tokens: which row of ffn_act_buffer() holds each slot the
  /// chip holds, numbered as moe_in numbers them (held slots in slot order).
  void place_moe_slots(int64_t n);

  const float* attention_out() const { return attn_.data(); }  ///< [n, n_heads*hd]
  const float* ffn_act() const { return act_.data(); }         ///< [n, n_ffn] (MoE: [held slots, n_ffn])
  const float* amax() const { return amax_.data(); }           ///< [n] per-token local amax
  const int32_t* partial_sums() const { return acc_.data(); }  ///< [n, D]
  const float* logits_out() const { return logits_.data(); }   ///< [n_vocab]
  const float* moe_amax() const { return moe_amax_.data(); }   ///< [n, k] per-slot local amax
  int32_t* moe_sums() { return moe_sums_.data(); }             ///< [n, k, D]

 private:
  const LayerWeights& layer_weights(int64_t layer) const;
  /// y[t] = dequantized (m . quantize(in[t])) for t < n; in: float [n, m.cols], y: float [n, m.rows].
  void linear_block(const QuantizedMatrix& m, const float* in, int64_t n, float* y);
  /// The first half of linear_block: in[t] quantized into q8_ with its amax in row_amax_, for t < n.
  void quantize_block(const float* in, int64_t cols, int64_t n);
  /// The second half, for every matrix that reads the same quantized input (q, k, v; gate, up).
  void quantized_linear_block(const QuantizedMatrix& m, int64_t n, float* y);

  ModelConfig cfg_;
  ShardRange range_;
  ShardShape shape_;
  WeightArena weight_arena_;       ///< every QuantizedMatrix's int8 weights, each 64-byte aligned
  ShardWeights weights_;
  int64_t n_kv_heads_ = 0;
  int64_t kv_head_begin_ = 0;

  std::vector<float> k_cache_;     ///< [n_slots, n_attention_layers, n_kv_heads, context, hd]
  std::vector<float> v_cache_;     ///< same
  std::vector<float> rope_freq_;   ///< [hd/2]
  std::vector<float> rope_cos_;    ///< [context, hd/2]
  std::vector<float> rope_sin_;    ///< [context, hd/2]

  std::vector<float> h_;           ///< [block, D] normed input
  std::vector<float> row_amax_;    ///< [block] amax of each row of the current linear's input
  std::vector<int8_t> q8_;         ///< [block, max(D, n_heads*hd, n_ffn)] quantized input
  std::vector<int32_t> acc_;       ///< [block, max(D, n_heads*hd, kv*hd, n_ffn, n_vocab)] int32 sums
  std::vector<float> q_;           ///< [block, n_heads*hd]
  std::vector<float> k_;           ///< [block, n_kv_heads*hd]
  std::vector<float> v_;           ///< [block, n_kv_heads*hd]
  std::vector<float> attn_;        ///< [block, n_heads*hd]
  std::vector<float> scores_;      ///< [n_heads, context] softmax scratch, one row per head task
  std::vector<float> gate_;        ///< [block, n_ffn]
  std::vector<float> act_;         ///< [block, n_ffn]; MoE: [block * min(k, held experts), n_ffn], a row per held slot
  std::vector<float> amax_;        ///< [block]
  std::vector<float> logits_;      ///< [n_vocab]
  std::vector<float> router_logits_;  ///< [E]
  std::vector<int32_t> chosen_;       ///< [block, k] each token's chosen experts, ascending
  std::vector<float> chosen_weight_;  ///< [block, k] their weights
  std::vector<int32_t> moe_act_row_;  ///< [block, k] the slot's row of act_, -1 if the chip does not hold it
  std::vector<float> moe_amax_;       ///< [block, k]
  std::vector<int32_t> moe_sums_;     ///< [block, k, D] w_down sums of the slots (partial, then the stage's)
};

}  // namespace lpurt::chip
