#pragma once
/// \file
/// Modelled times of a generation run, a pure function of the plan and the request (never of the host
/// or of the rank count): the makespan of the prefill program (the prompt in chunks of block_tokens,
/// pipelined through the stages) is the time to first token; each further token is one decode program
/// (one token through every stage, logits at the end) at its position. Host I/O (tokens in, logits out
/// over PCIe) is not modelled: like GroqFlow's estimate_performance, the figures are device time.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "partition/plan.hpp"
#include "partition/schedule.hpp"
#include "partition/topology.hpp"

namespace lpurt::partition {

/// The network of the plan's system (its `topology` parameter) over all its chips, idle ones included.
Topology topology_for(const Plan& plan);
/// Prefill blocks for one prompt on `replica`: chunks of block_tokens, logits after the last.
std::vector<Block> prefill_blocks(int64_t prompt_tokens, int64_t block_tokens, int64_t replica = 0);
/// The prefill of every sequence of the plan's batch (sequence b on replica b % replicas), in order.
std::vector<Block> batch_prefill_blocks(const Plan& plan, int64_t prompt_tokens);
/// One decode step of one sequence on `replica`: one token, logits at the end.
std::vector<Block> decode_blocks(int64_t replica = 0);

/// Where the cycles of one program go.
struct StepProfile {
  int64_t makespan_cycles = 0;
  std::vector<int64_t> chip_compute_cycles;   ///< [chips] busy cycles on MXM + VXM
  std::vector<int64_t> chip_send_cycles;      ///< [chips] cycles of the chip's outgoing transfers
  Hop busiest_link;                           ///< the link busy longest (from == to == 0 if none)
  int64_t busiest_link_cycles = 0;
  int64_t n_transfers = 0;
  int64_t transfer_bytes = 0;                 ///< on the modelled links (link_bytes), not the host payload
  /// The critical path (the chain of ops that fixed the makespan) split into chip compute and link
  /// transfers; the two add up to makespan_cycles.
  int64_t critical_compute_cycles = 0;
  int64_t critical_transfer_cycles = 0;
};
StepProfile profile(const Program& program, const Timeline& timeline, const chip::ChipSpec& hardware);

struct ModelledTimes {
  int64_t prefill_cycles = 0;      ///< prompt in, first token out
  int64_t decode_cycles = 0;       ///< all decode steps (tokens 2..K)
  int64_t decode_steps = 0;
  double ttft_s = 0;               ///< time to first token
  double tpot_s = 0;               ///< time per output token after the first (mean over decode steps)
  /// tpot_s = tpot_compute_s + tpot_transfer_s + tpot_idle_s: compute and transfers on each decode step's
  /// critical path, and the rest of the period (a user's token waiting while the busiest stage serves
  /// the batch's other sequences). Means over the decode steps, like tpot_s.
  double tpot_compute_s = 0;
  double tpot_transfer_s = 0;
  double tpot_idle_s = 0;
  double tokens_per_s_user = 0;
  double tokens_per_s_system = 0;
  /// Profile of the first decode step on the slowest replica (replica 0 when all are alike); its per-chip
  /// cycles are every chip's in a decode step on the chip's own replica.
  StepProfile decode;
  /// [pp] each stage's span in that decode step, its first compute op's start to its last one's end: with
  /// the pipeline full, the busiest stage sets the period, so their spread is what balancing stages
  /// (uneven layer splits, or a per-stage tp) could still gain.
  std::vector<int64_t> decode_stage_cycles;
};

/// Sees every program run of modelled_times in time order: a name ("prefill", "decode 1", ...), the
/// program, its timeline and where it starts on the run's time axis.
using TimelineVisitor = std::function<void(const std::string& name, const std::shared_ptr<const Program>& program,
                                           const Timeline& timeline, int64_t offset_cycles)>;

/// Prompt of `prompt_tokens`, `output_tokens` generated (the first from the prefill's logits).
ModelledTimes modelled_times(const Plan& plan, int64_t prompt_tokens, int64_t output_tokens,
                             const TimelineVisitor& visit = {});
/// The same for a chosen plan, without modelling again the batch's prefill its search modelled (for the
/// request's prompt), nor building again the decode program it built.
ModelledTimes modelled_times(const PlanChoice& choice, int64_t prompt_tokens, int64_t output_tokens);

/// Cycles of one decode step at `position` (the planner ranks layouts by it).
int64_t decode_step_cycles(const Plan& plan, int64_t position);

/// The two terms of the decode period: one token's trip through the pipeline, and the busiest stage's
/// time per token (from its first compute op to its last, it cannot take the next token).
struct DecodePace {
  int64_t latency_cycles = 0;
  int64_t busiest_stage_cycles = 0;
  /// With n_slots sequences interleaved per replica, a user waits for the later of the two.
  int64_t period_cycles(int64_t n_slots) const { return std::max(latency_cycles, n_slots * busiest_stage_cycles); }
};
/// The pace of a decode program's timeline.
DecodePace decode_pace(const Plan& plan, const Program& decode, const Timeline& timeline);

/// What one pass of a one-block program (a decode token, or a prefill chunk) through its replica's pipeline
/// costs at one base position.
struct BlockCost {
  int64_t latency_cycles = 0;        ///< the block's trip: its program's makespan (output at the end)
  int64_t busiest_stage_cycles = 0;  ///< the longest a stage is busy with it (first compute op to last)
  int64_t busy_chip_cycles = 0;      ///< compute (MXM and VXM) cycles summed over the replica's chips
};
/// The costs of `program`, one block, at base positions [first_position, first_position + n), in order.
/// The timeline is solved only where its decisions change and interpolated exactly between, as for the
/// decode steps of modelled_times (when the chips' attention ops differ in heads or speed, only where
/// the decisions provably hold over the range).
/// `solves` (if not null) is increased by the timelines solved.
std::vector<BlockCost> block_costs(const Plan& plan, const Program& program, int64_t first_position, int64_t n,
                                   int64_t* solves = nullptr);

/// One pipeline stage's span in a one-block program: its first compute op's start and its last one's end,
/// cycles from the block's entry into the pipeline.
struct StageSpan {
  int64_t first_cycles = 0;
  int64_t last_cycles = 0;
};
/// The stages' spans of `program`, one block, at base positions [first_position, first_position + n):
/// [n x pp], row i at first_position + i; exact (interpolated as block_costs is).
std::vector<StageSpan> block_stage_spans(const Plan& plan, const Program& program, int64_t first_position, int64_t n);

/// How a program's timeline uses one unit ([chip][MXM|VXM]) or directed link.
struct ResourceUse {
  int64_t head_cycles = 0;  ///< start of its first op
  int64_t busy_cycles = 0;  ///< its ops' durations, summed
  int64_t tail_cycles = 0;  ///< the longest chain of ops (along dependencies, units and links) after its last op
};
/// Every unit and link the program uses, by resource_key.
std::unordered_map<int64_t, ResourceUse> resource_uses(const Program& program, const Timeline& timeline);
/// A unit's key (negative) and a link's (Program::link_key, not negative).
inline int64_t resource_key(const Op& op) { return -1 - (2 * int64_t{op.chip} + (op.unit == Unit::mxm ? 0 : 1)); }

/// Programs solved one after another as if they were one: each program's ops after every op of the ones
/// before, on the same chips, units and links, as build_program lays out consecutive blocks (a chip's
/// first compute op waits for its last one before and for the transfers it received since; a send with no
/// producer in its block waits for its chip's last compute op; a unit's or link's first op for its last
/// user). The makespan is exactly that of the concatenated program, without building it.
class ChainedSolver {
 public:
  /// A program prepared for chaining: its dependencies, resource order and boundary ops.
  class Link {
   public:
    Link(const Program& program, const Plan& plan);

   private:
    friend class ChainedSolver;
    const Program& program_;
    const Plan& plan_;
    std::vector<int32_t> pred_begin_, preds_;                   ///< [ops + 1], op indices (as TimelineSolver's)
    std::vector<int64_t> base_duration_cycles_;                 ///< [ops] at base position 0
    std::vector<int32_t> attention_ops_;                        ///< their durations depend on the position
    std::vector<int32_t> chip_first_compute_, chip_last_compute_;  ///< [chips], -1: none
    std::vector<int32_t> orphan_sends_;                         ///< sends with no producer in the program
    std::vector<int32_t> unit_first_, unit_last_;               ///< [2 chips]
    std::vector<std::pair<int64_t, int32_t>> link_first_, link_last_;  ///< (link key, op)
    /// (op, chip): the receives after their chip's last compute op, which the next program's first one waits for
    std::vector<std::pair<int32_t, int32_t>> trailing_recvs_;
  };

  explicit ChainedSolver(int64_t n_chips);
  /// Appends `link`'s program with its blocks at `base_position`; returns the makespan so far.
  int64_t append(const Link& link, int64_t base_position);
  int64_t makespan_cycles() const { return makespan_cycles_; }
  /// The timeline of the program appended last (start and duration of its ops; no waited_for).
  Timeline last_timeline() const;

 private:
  std::vector<int64_t> chip_compute_end_, chip_pending_end_, unit_end_;  ///< -1: none yet
  std::unordered_map<int64_t, int64_t> link_end_;
  std::vector<int64_t> end_, duration_;  ///< [ops] of the last program appended
  int64_t makespan_cycles_ = 0;
};

/// Whether two replicas that prefill (the first min(replicas, batch)) may put transfers on the same link:
/// their replica_links meet.
bool replicas_share_links(const Plan& plan, const Topology& topology);

/// The makespan of the prefill of every sequence of the plan's batch (the program of batch_prefill_blocks),
/// from one-block programs per replica chained: the same cycles, without building the program. Replicas
/// that share no link are modelled one at a time (the slowest one's makespan), and those congruent to
/// the first (congruent_to_first_replica) on uniform hardware not at all.
int64_t batch_prefill_cycles(const Plan& plan, int64_t prompt_tokens);

/// Steady-state cycles between two output tokens of one user at `position`, with the plan's batch
/// interleaved through the pipeline: max(latency of one token through the pipeline, sequences per
/// replica x the busiest stage's time per token). One decode program gives both; with chips or links
/// that differ, the slowest replica's.
int64_t decode_period_cycles(const Plan& plan, int64_t position);
/// The same from a decode program's timeline.
int64_t decode_period_cycles(const Plan& plan, const Program& decode, const Timeline& timeline);

}  // namespace lpurt::partition
