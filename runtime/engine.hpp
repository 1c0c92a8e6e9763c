#pragma once
/// \file
/// Executes a plan's chips on this rank: every chip's Shard, its weights loaded from a WeightSource, and
/// the exact combination of tensor-parallel partial results between phases (max of amax, sum of int32).
///
/// Example usage:
/// \code
///   lpurt::runtime::Engine engine(plan, *source);
///   engine.forward(0, prompt.data(), 0, prompt.size(), logits.data());   // prefill, logits of the last token
///   engine.forward(0, &next, prompt.size(), 1, logits.data());           // one decode step
/// \endcode

#include <cstdint>
#include <memory>
#include <vector>

#include "chip/shard.hpp"
#include "io/weight_source.hpp"
#include "partition/plan.hpp"

namespace lpurt::runtime {

class Engine {
 public:
  /// Allocates every chip's buffers and loads its weights (only its own slices).
  Engine(const partition::Plan& plan, io::WeightSource& source);

  /// Feeds n tokens of sequence `slot` at positions [pos, pos + n), in blocks of the plan's block_tokens.
  /// If `logits` is not null, writes the logits of the last token there: float [vocab_size].
  void forward(int64_t slot, const int32_t* tokens, int64_t pos, int64_t n, float* logits);

  const partition::Plan& plan() const { return plan_; }

 private:
  void forward_block(int64_t slot, const int32_t* tokens, int64_t pos, int64_t n, bool want_logits, float* logits);
  chip::Shard& shard(int64_t stage, int64_t tp_rank) { return *shards_[static_cast<std::size_t>(stage * plan_.tp + tp_rank)]; }
  /// amax_ = elementwise max over the stage's chips of their amax(), for n tokens.
  void reduce_amax(int64_t stage, int64_t n);
  /// sums_ = elementwise int32 sum over the stage's chips of their partial_sums(), for n tokens.
  void reduce_sums(int64_t stage, int64_t n);

  partition::Plan plan_;
  std::vector<std::unique_ptr<chip::Shard>> shards_;  ///< [n_chips], chip = stage * tp + tp_rank
  std::vector<float> x_;      ///< [block, D] residual stream (identical on every chip of a stage)
  std::vector<float> amax_;   ///< [block] group-wide per-token amax
  std::vector<int32_t> sums_; ///< [block, D] group-wide int32 sums
};

}  // namespace lpurt::runtime
