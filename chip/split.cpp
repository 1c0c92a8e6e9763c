#include "chip/split.hpp"

#include "chip/error.hpp"

namespace lpurt::chip {

ShardRange whole_model(const ModelConfig& cfg) {
  ShardRange r;
  r.part_end = n_parts(cfg);
  r.expert_end = cfg.n_experts;
  r.head_end = cfg.n_heads;
  r.ffn_end = cfg.ffn_size();
  r.vocab_end = cfg.vocab_size;
  r.embed_end = cfg.vocab_size;
  r.final_norm = true;
  return r;
}

void split_experts(const ModelConfig& cfg, int64_t tp, int64_t t, ShardRange& range) {
  const int64_t experts = cfg.n_experts, width = cfg.ffn_size();
  LPURT_ASSERT(cfg.is_moe() && t >= 0 && t < tp && tp <= experts * width);
  if (tp <= experts) {
    range.expert_begin = experts * t / tp;
    range.expert_end = experts * (t + 1) / tp;
    range.ffn_begin = 0;
    range.ffn_end = width;
    return;
  }
  int64_t e = 0;
  while (tp * (e + 1) / experts <= t) ++e;
  const int64_t first = tp * e / experts, group = tp * (e + 1) / experts - first;
  range.expert_begin = e;
  range.expert_end = e + 1;
  range.ffn_begin = width * (t - first) / group;
  range.ffn_end = width * (t - first + 1) / group;
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
