#pragma once
/// \file
/// Executes a plan's chips on MPI ranks. Chips are assigned to ranks in contiguous blocks (chip order is
/// stage-major, so a tensor-parallel group stays on one rank where the counts allow). Each rank holds the
/// Shards of its chips, loads only their weight slices, and combines tensor-parallel partials exactly:
/// per-token amax with a max, int32 partial sums with a sum, first locally, then with MPI_Allreduce over
/// the ranks of the stage when a stage spans ranks. The residual stream of a stage is replicated on its
/// ranks; the lowest rank of stage s sends it to the ranks of stage s+1 that do not hold it yet.
///
/// Example usage:
/// \code
///   lpurt::runtime::Engine engine(plan, *source);
///   engine.forward(0, prompt.data(), 0, prompt.size(), logits.data());   // prefill, logits of the last token
///   engine.forward(0, &next, prompt.size(), 1, logits.data());           // one decode step
/// \endcode

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "chip/shard.hpp"
#include "io/weight_source.hpp"
#include "partition/plan.hpp"

namespace lpurt::runtime {

class Engine {
 public:
  /// Allocates this rank's chips and loads their weights (only their slices). `comm` hosts the chips;
  /// every rank of it must construct the Engine with the same plan (collective).
  Engine(const partition::Plan& plan, io::WeightSource& source, MPI_Comm comm = MPI_COMM_SELF);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Rank that hosts `chip` when n_chips chips are spread over n_ranks ranks in contiguous blocks.
  static int rank_of_chip(int64_t chip, int64_t n_chips, int n_ranks);

  /// Feeds n tokens of sequence `slot` at positions [pos, pos + n), in blocks of the plan's block_tokens.
  /// If `logits` is not null, writes the logits of the last token there on every rank: float [vocab_size].
  /// Collective over the Engine's communicator.
  void forward(int64_t slot, const int32_t* tokens, int64_t pos, int64_t n, float* logits);

  const partition::Plan& plan() const { return plan_; }

 private:
  void forward_block(int64_t slot, const int32_t* tokens, int64_t pos, int64_t n, bool want_logits, float* logits);
  /// The chips of `stage` on this rank (possibly none).
  const std::vector<chip::Shard*>& local(int64_t stage) const { return stage_shards_[static_cast<std::size_t>(stage)]; }
  /// amax_ = elementwise max over the stage's chips of their amax(), for n tokens.
  void reduce_amax(int64_t stage, int64_t n);
  /// sums_ = elementwise int32 sum over the stage's chips of their partial_sums(), for n tokens.
  void reduce_sums(int64_t stage, int64_t n);
  /// Makes x_ [n, D] present on every rank of `stage`, coming from the ranks of stage - 1.
  void hand_over(int64_t stage, int64_t n);

  partition::Plan plan_;
  MPI_Comm comm_ = MPI_COMM_SELF;
  int rank_ = 0;
  int n_ranks_ = 1;
  std::vector<std::unique_ptr<chip::Shard>> shards_;     ///< this rank's chips, in chip order
  std::vector<std::vector<chip::Shard*>> stage_shards_;  ///< [pp] this rank's chips of each stage
  std::vector<int> stage_first_rank_;                    ///< [pp] lowest rank hosting a chip of the stage
  std::vector<int> stage_last_rank_;                     ///< [pp] highest such rank
  std::vector<MPI_Comm> stage_comm_;                     ///< [pp] ranks of the stage, or MPI_COMM_NULL
  std::vector<float> x_;      ///< [block, D] residual stream (identical on every chip of a stage)
  std::vector<float> amax_;   ///< [block] group-wide per-token amax
  std::vector<int32_t> sums_; ///< [block, D] group-wide int32 sums
};

}  // namespace lpurt::runtime
