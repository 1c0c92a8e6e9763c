#include "chip/split.hpp"

namespace lpurt::chip {

ShardRange whole_model(const ModelConfig& cfg) {
  ShardRange r;
  r.part_end = 2 * cfg.n_layers;
  r.expert_end = cfg.n_experts;
  r.head_end = cfg.n_heads;
  r.ffn_end = cfg.ffn_size();
  r.vocab_end = cfg.vocab_size;
  r.embed_end = cfg.vocab_size;
  r.final_norm = true;
  return r;
}

std::vector<TensorSlice> tensor_slices(const ModelConfig& cfg, const ShardRange& range) {
  std::vector<TensorSlice> slices;
  for_each_slice(cfg, range, [&](const TensorSlice& s) { slices.push_back(s); });
  return slices;
}

int64_t slice_weight_bytes(const ModelConfig& cfg, const ShardRange& range) {
  int64_t bytes = 0;
  for_each_slice(cfg, range, [&](const TensorSlice& s) { bytes += s.bytes(); });
  return bytes;
}

}  // namespace lpurt::chip
