#pragma once
/// \file
/// The split of a model over chips, in one place: which rectangle of which tensor a chip holds. The
/// planner gives each chip a ShardRange; it expands here, and only here, into the chip's tensor slices.
/// Every consumer reads that list: the Shard sizes its weight buffers from it, the loader reads exactly
/// those rectangles, and SRAM accounting sums their bytes, so the bytes accounted equal the bytes read
/// by construction. A new kind of layout is a change of ShardRange and of for_each_slice.
///
/// Example usage:
/// \code
///   for (const lpurt::chip::TensorSlice& s : lpurt::chip::tensor_slices(cfg, range))
///     std::printf("%s rows %ld..%ld cols %ld..%ld\n", tensor_path(s.tensor).c_str(), s.row_begin, s.row_end,
///                 s.col_begin, s.col_end);
/// \endcode

#include <cstdint>
#include <vector>

#include "chip/model_config.hpp"

namespace lpurt::chip {

/// What one chip holds. Query heads, FFN columns and vocabulary rows are contiguous ranges; the KV heads
/// are those its query heads read (replicated across chips when there are more chips than KV heads).
///
/// MoE layers hold experts [expert_begin, expert_end), and of each the FFN columns [ffn_begin, ffn_end)
/// of its width: whole experts when a stage has no more chips than experts (expert parallelism), else
/// each expert sliced over a group of chips by FFN columns as the dense FFN is. Every chip of an MoE
/// stage also holds the w_down row scales of the experts it does not hold (a slice with no columns): the
/// stage's summed int32 expert outputs are dequantized on every chip.
/// A layer's three parts, in order: part 3l is layer l's attention (attn_norm, wq, wk, wv, wo, its KV
/// cache), part 3l+1 its FFN's input half (ffn_norm, the rows of w_gate and w_up, or the router and the
/// experts' gate/up: up to the SiLU output and its amax), part 3l+2 its output half (w_down, whose int32
/// sums are reduced and added to the residual). Pipeline stages split the model at part boundaries, so a
/// stage may begin or end inside a layer, and inside its FFN.
enum class LayerPart : uint8_t { attention, ffn_in, ffn_out };
constexpr int64_t parts_per_layer = 3;
inline int64_t part_index(int64_t layer, LayerPart part) { return parts_per_layer * layer + static_cast<int64_t>(part); }
inline int64_t part_layer(int64_t part) { return part / parts_per_layer; }
inline LayerPart part_kind(int64_t part) { return static_cast<LayerPart>(part % parts_per_layer); }
/// Layer parts of the whole model.
inline int64_t n_parts(const ModelConfig& cfg) { return parts_per_layer * cfg.n_layers; }

struct ShardRange {
  /// Layer parts [begin, end) (LayerPart).
  int64_t part_begin = 0, part_end = 0;
  int64_t head_begin = 0, head_end = 0;    ///< query heads of every held layer
  int64_t ffn_begin = 0, ffn_end = 0;      ///< rows of w_gate/w_up, columns of w_down (of each held expert)
  int64_t expert_begin = 0, expert_end = 0;  ///< MoE experts held (whole, or sliced by the FFN range)
  int64_t vocab_begin = 0, vocab_end = 0;  ///< rows of lm_head; empty if the chip holds no lm_head
  int64_t embed_begin = 0, embed_end = 0;  ///< rows (tokens) of the embedding table; empty if none
  bool final_norm = false;                 ///< holds final_norm (last stage)

  int64_t layer_begin() const { return part_layer(part_begin); }  ///< first layer touched
  /// One past the last layer touched.
  int64_t layer_end() const { return part_layer(part_end + parts_per_layer - 1); }
  int64_t n_layers() const { return layer_end() - layer_begin(); }
  bool has_part(int64_t layer, LayerPart part) const {
    const int64_t i = part_index(layer, part);
    return i >= part_begin && i < part_end;
  }
  bool has_attention(int64_t layer) const { return has_part(layer, LayerPart::attention); }
  bool has_ffn_in(int64_t layer) const { return has_part(layer, LayerPart::ffn_in); }
  bool has_ffn_out(int64_t layer) const { return has_part(layer, LayerPart::ffn_out); }
  /// The first layer whose attention is held (the first layer of the KV cache).
  int64_t attention_layer_begin() const { return part_layer(part_begin + parts_per_layer - 1); }
  int64_t n_attention_layers() const { return part_layer(part_end + parts_per_layer - 1) - attention_layer_begin(); }
  int64_t n_heads() const { return head_end - head_begin; }
  int64_t n_ffn() const { return ffn_end - ffn_begin; }
  int64_t n_vocab() const { return vocab_end - vocab_begin; }
  int64_t n_embed() const { return embed_end - embed_begin; }
  int64_t n_experts() const { return expert_end - expert_begin; }
  int64_t kv_head_begin(const ModelConfig& c) const { return head_begin / c.heads_per_kv_head(); }
  int64_t kv_head_end(const ModelConfig& c) const {
    return n_heads() == 0 ? kv_head_begin(c) : (head_end - 1) / c.heads_per_kv_head() + 1;
  }
  int64_t n_kv_heads(const ModelConfig& c) const { return kv_head_end(c) - kv_head_begin(c); }
};

/// The whole model on one chip.
ShardRange whole_model(const ModelConfig& cfg);

/// The experts and FFN columns (of each held expert) that chip t of an MoE stage of tp chips holds, in
/// `range`: with tp <= E, whole experts [E t / tp, E (t + 1) / tp); with more chips than experts, chips
/// [tp e / E, tp (e + 1) / E) hold expert e, each a contiguous range of its FFN columns, split as the
/// dense FFN splits its columns. Needs tp <= E x the expert width (a chip holds at least one column).
void split_experts(const ModelConfig& cfg, int64_t tp, int64_t t, ShardRange& range);

/// Rows [row_begin, row_end) x columns [col_begin, col_end) of one tensor. A quantized matrix's slice
/// carries the float32 scales of its rows (all rows for a column slice, whose output rows are whole).
struct TensorSlice {
  TensorId tensor;
  int64_t row_begin = 0, row_end = 0;
  int64_t col_begin = 0, col_end = 0;

  int64_t rows() const { return row_end - row_begin; }
  int64_t cols() const { return col_end - col_begin; }
  /// Bytes as a chip stores them: int8 weights + float32 row scales, or float32 elements.
  int64_t bytes() const { return is_quantized_matrix(tensor.kind) ? rows() * cols() + 4 * rows() : 4 * rows() * cols(); }
};

/// Calls visit(slice) for every slice a chip with `range` holds, in load order (model-level tensors and
/// layers in file order). Allocates nothing: the planner sums slices of every candidate layout.
template <typename Visit>
void for_each_slice(const ModelConfig& cfg, const ShardRange& range, Visit&& visit);

/// The same slices as a list.
std::vector<TensorSlice> tensor_slices(const ModelConfig& cfg, const ShardRange& range);

/// Bytes of every weight slice a chip with `range` holds.
int64_t slice_weight_bytes(const ModelConfig& cfg, const ShardRange& range);

template <typename Visit>
void for_each_slice(const ModelConfig& cfg, const ShardRange& r, Visit&& visit) {
  const int64_t d = cfg.hidden_size;
  const int64_t hd = cfg.head_dim();
  const int64_t q_rows_begin = r.head_begin * hd, q_rows_end = r.head_end * hd;
  const int64_t kv_rows_begin = r.kv_head_begin(cfg) * hd, kv_rows_end = r.kv_head_end(cfg) * hd;
  auto whole = [&](const TensorId& id) {
    const TensorShape s = tensor_shape(cfg, id);
    visit(TensorSlice{id, 0, s.rows, 0, s.cols});
  };
  // An expert's (or the dense FFN's) slices of the FFN halves held: gate/up rows, w_down columns.
  auto expert = [&](int64_t layer, int64_t index) {
    if (r.has_ffn_in(layer)) {
      visit(TensorSlice{{TensorKind::w_gate, layer, index}, r.ffn_begin, r.ffn_end, 0, d});
      visit(TensorSlice{{TensorKind::w_up, layer, index}, r.ffn_begin, r.ffn_end, 0, d});
    }
    if (r.has_ffn_out(layer)) visit(TensorSlice{{TensorKind::w_down, layer, index}, 0, d, r.ffn_begin, r.ffn_end});
  };
  if (r.n_embed() > 0) visit(TensorSlice{{TensorKind::embedding}, r.embed_begin, r.embed_end, 0, d});
  for (int64_t l = r.layer_begin(); l < r.layer_end(); ++l) {
    if (r.has_attention(l)) {
      whole({TensorKind::attn_norm, l});
      visit(TensorSlice{{TensorKind::wq, l}, q_rows_begin, q_rows_end, 0, d});
      if (cfg.attention_bias) visit(TensorSlice{{TensorKind::wq_bias, l}, q_rows_begin, q_rows_end, 0, 1});
      visit(TensorSlice{{TensorKind::wk, l}, kv_rows_begin, kv_rows_end, 0, d});
      if (cfg.attention_bias) visit(TensorSlice{{TensorKind::wk_bias, l}, kv_rows_begin, kv_rows_end, 0, 1});
      visit(TensorSlice{{TensorKind::wv, l}, kv_rows_begin, kv_rows_end, 0, d});
      if (cfg.attention_bias) visit(TensorSlice{{TensorKind::wv_bias, l}, kv_rows_begin, kv_rows_end, 0, 1});
      if (cfg.qk_norm) {
        whole({TensorKind::q_norm, l});
        whole({TensorKind::k_norm, l});
      }
      visit(TensorSlice{{TensorKind::wo, l}, 0, d, q_rows_begin, q_rows_end});
    }
    if (!r.has_ffn_in(l) && !r.has_ffn_out(l)) continue;
    if (r.has_ffn_in(l)) whole({TensorKind::ffn_norm, l});
    if (cfg.is_moe()) {
      if (r.has_ffn_in(l)) whole({TensorKind::router, l});
      for (int64_t e = 0; e < cfg.n_experts; ++e) {
        if (e >= r.expert_begin && e < r.expert_end) expert(l, e);
        else if (r.has_ffn_out(l)) visit(TensorSlice{{TensorKind::w_down, l, e}, 0, d, 0, 0});  // its row scales only
      }
    } else {
      expert(l, -1);
    }
  }
  if (r.final_norm) whole({TensorKind::final_norm});
  // With tied embeddings the lm_head rows are the embedding table's (WeightSource reads them there); a
  // chip that holds both stores both, as the chip would.
  if (r.n_vocab() > 0) visit(TensorSlice{{TensorKind::lm_head}, r.vocab_begin, r.vocab_end, 0, d});
}

}  // namespace lpurt::chip
