#pragma once
/// \file
/// The static schedule: for a sequence of token blocks (prefill chunks, or one decode token), every
/// chip's program of compute ops on its functional units and of transfers on C2C links, in one flat
/// array in a global order that is a valid execution order (every op after the ops it needs).
///
/// The structure (Program) does not depend on token positions; the times (Timeline) do, through the
/// attention ops, and are computed by booking each op, in array order, on its unit or on every link of
/// its route at the earliest cycle its inputs and resources allow. A link or unit is therefore never
/// double-booked (the software-scheduled network has no arbitration); the verifier checks that, and the
/// send/receive pairing and data readiness, on any program and timeline.
///
/// Tensor-parallel reductions are expanded into link transfers by the algorithm partition/collective.hpp
/// chooses for the stage's chips and the message: the per-token amax (in an MoE layer the per-slot amax,
/// n x k values) is all-gathered and max'ed, int32 partial sums (in an MoE layer the [n x k x D] expert
/// slots) are reduce-scattered and all-gathered (step by step, each chip owning a range of the flat
/// array), and so is the embedding (chips contribute -0.0 for rows they do not hold, the identity of
/// float addition).
/// Activations move from chip (stage s, t) to chip (stage s+1, t); when stage s+1 begins inside an FFN
/// (at its output half), with the input half's results in the same transfer (the SiLU output and amax,
/// and in an MoE layer the routing: chip::ffn_hand_off_values). Every chip of
/// stage s holds the same activations, so a hand-off may instead be split: chip (s, t) sends only the
/// range of the flat [n * D] array that member t owns after the reduce-scatter of stage s+1's collective,
/// and stage s+1 all-gathers it (that collective's all-gather steps). The split puts the activations on a
/// link the stage's routes share (between dragonfly racks, one global link) once instead of tp times, at
/// the cost of the gather; each hand-off takes whichever of the two its standalone program (the stage's
/// transfers alone on an idle network, as partition/collective.hpp chooses an algorithm) finishes first.
///
/// Example usage:
/// \code
///   Program p = build_program(plan, topology, {{0, 16, true}});   // one 16-token prefill block
///   Timeline t = compute_timeline(p, plan, topology);
///   verify(p, t);                                                 // throws ScheduleError on a defect
/// \endcode

#include <cstdint>
#include <string>
#include <vector>

#include "partition/collective.hpp"
#include "partition/plan.hpp"
#include "partition/topology.hpp"

namespace lpurt::partition {

class ScheduleError : public Error {
 public:
  explicit ScheduleError(const std::string& message) : Error(message, ExitCode::internal) {}
};

/// Functional units of a chip, and the C2C side of it (a send books links, a receive books nothing).
enum class Unit : uint8_t { mxm, vxm, c2c };
const char* unit_name(Unit u);

enum class OpKind : uint8_t {
  embed,          ///< VXM: embedding rows of the chip's vocabulary range          [functional: embed]
  attn_norm,      ///< VXM: RMSNorm
  qkv,            ///< MXM: q, k, v of the chip's heads
  attention,      ///< VXM: RoPE, KV append, attention                           [functional: attention_in]
  reduce_max,     ///< VXM: max of the amax values gathered in one collective step   [functional]
  wo,             ///< MXM: wo partial sums                                        [functional]
  reduce_sum,     ///< VXM: sum of the chip's range over one collective step's group [functional]
  attn_residual,  ///< VXM: x += wo output                                         [functional]
  ffn_norm,       ///< VXM
  gate_up,        ///< MXM
  silu,           ///< VXM                                                         [functional: ffn_in]
  down,           ///< MXM                                                         [functional]
  ffn_residual,   ///< VXM: x += FFN (or the dequantized, weighted expert slots)     [functional]
  moe_up,         ///< MXM+VXM: router, gate/up/SiLU of the chosen experts' columns held [functional: moe_in]
  moe_down,       ///< MXM: w_down partial sums of those slots                    [functional: moe_out_partial]
  final_norm,     ///< VXM
  lm_head,        ///< MXM: logits of the chip's vocabulary rows                   [functional]
  send,           ///< C2C: payload to `peer` along the route
  recv,           ///< C2C: payload from `peer`
};
const char* op_name(OpKind k);

/// What a transfer carries; the runtime maps it to a chip buffer.
enum class Payload : uint8_t {
  none, amax, partial_sums, reduced_sums, embedding_partial, embedding_reduced, activations,
  moe_partial,  ///< MoE: int32 w_down sums [n, k, D] of the chosen experts' columns a chip holds, 0 elsewhere
  moe_reduced,  ///< MoE: the summed slots, all-gathered
  moe_amax,     ///< MoE: per-slot activation amax [n, k] of the columns a chip holds, 0 elsewhere
  /// What a stage that begins at an FFN's output half receives from the chip of the previous stage with
  /// its tp rank (the same FFN columns and experts), in one transfer: the activations [n, D], then the
  /// input half's results (chip::ffn_hand_off_values, as the host keeps them): dense, the SiLU output
  /// [n, n_ffn] and the stage's amax of it [n]; MoE, the chosen experts [n, k] and their weights [n, k],
  /// the stage's per-slot amax [n, k] and the held slots' SiLU rows. The links carry fewer in an MoE layer
  /// (Op::link_values, ffn_hand_off_link_values).
  activations_ffn,
  /// A split hand-off: chip (s - 1, t)'s range of the activations [n * D] (member t's share of stage s's
  /// collective), then all-gathered over stage s (activations_gathered).
  activations_share,
  activations_gathered,
  /// A split hand-off into an FFN's output half, one transfer: chip (s - 1, t)'s range of the activations
  /// (elem_begin is where it begins in [n * D]; activations_share's range), then the input half's results
  /// as in activations_ffn. The range is all-gathered as above.
  activations_ffn_share,
};
/// Whether a transfer of `p` goes between pipeline stages (its receiver waits for the sender's stage).
inline bool between_stages(Payload p) {
  return p == Payload::activations || p == Payload::activations_ffn || p == Payload::activations_share ||
         p == Payload::activations_ffn_share;
}
const char* payload_name(Payload p);
/// The array a reduce-scatter payload (partial_sums, embedding_partial, moe_partial) belongs to.
Reduced reduced_array(Payload partial);

struct Op {
  OpKind kind = OpKind::embed;
  Unit unit = Unit::vxm;
  /// transfers: what they carry; reduce_sum, reduce_max: what they reduce; down, moe_down: activations_ffn
  /// when its stage begins at this FFN's output half with a whole hand-off (which it unpacks first)
  Payload payload = Payload::none;
  uint8_t step = 0;            ///< collective ops: the step of Program::collectives[collective] it belongs to
  int32_t chip = 0;
  int32_t peer = -1;           ///< send: destination chip; recv: source chip
  int32_t layer = -1;
  int32_t block = 0;           ///< index into Program::blocks
  int32_t match = -1;          ///< send <-> recv partner op
  int32_t collective = -1;     ///< reductions and their transfers: index into Program::collectives
  /// transfers: the values the links carry, at activation_bytes_per_value each, when not elem_count (-1):
  /// an MoE hand-off's (activations_ffn, activations_ffn_share; ffn_hand_off_link_values)
  int32_t link_values = -1;
  int64_t elem_begin = 0;      ///< payload elements [elem_begin, elem_begin + elem_count) of the block array
  int64_t elem_count = 0;
  int64_t bytes = 0;           ///< transfers: payload bytes the host moves (float32 or int32 values)
  int32_t dep_begin = 0;       ///< deps: Program::deps[dep_begin, dep_begin + dep_count)
  int32_t dep_count = 0;
  int32_t hop_begin = 0;       ///< sends: route hops Program::hops[hop_begin, hop_begin + hop_count)
  int32_t hop_count = 0;
};

struct Block {
  int64_t position_offset = 0;  ///< first position relative to the program's base position
  int64_t n_tokens = 1;
  bool with_logits = false;
  int64_t replica = 0;          ///< the pipeline replica that runs the block
};

struct Program {
  int64_t n_chips = 0;          ///< chips of the plan (the ones that hold ops)
  int64_t network_chips = 0;    ///< chips of the system's network, idle ones included: routes may cross them
  /// A directed link's index in per-link tables.
  int64_t link_key(const Hop& hop) const { return hop.from * network_chips + hop.to; }
  std::vector<Block> blocks;
  std::vector<Op> ops;           ///< global execution order
  std::vector<int32_t> deps;     ///< op indices
  std::vector<Hop> hops;         ///< route hops of the sends
  /// The collectives of the program's reductions (each stage's algorithm and geometry for one message);
  /// the schedule expands them and the engine reads them to place and sum the ranges.
  std::vector<Collective> collectives;
  /// Ops of each chip in program order (indices into ops), [n_chips].
  std::vector<std::vector<int32_t>> chip_ops;
};

struct Timeline {
  std::vector<int64_t> start_cycles;     ///< [ops]
  std::vector<int64_t> duration_cycles;  ///< [ops]; a recv's duration is 0, it "ends" when the data arrives
  /// [ops] the op whose end fixed this op's start: a dependency (data) or the previous user of the unit
  /// or link (-1: started at cycle 0). Following it back from the last op gives the critical path.
  std::vector<int32_t> waited_for;
  int64_t makespan_cycles = 0;
  int64_t end_cycles(std::size_t op) const { return start_cycles[op] + duration_cycles[op]; }
};

/// Builds the program of `blocks` on `plan`.
Program build_program(const Plan& plan, const Topology& topology, const std::vector<Block>& blocks);

/// The directed links (Program::link_key) that programs of `replica` may use, sorted: those on the routes
/// between any two chips of one of its stages (collectives) and from each chip to the chip of the next
/// stage with its tp rank (hand-offs). Every transfer build_program expands is one of these pairs.
std::vector<int64_t> replica_links(const Plan& plan, const Topology& topology, int64_t replica);

/// Whether replica `replica`'s programs are replica 0's moved along the network: its network chips are
/// replica 0's plus one shift of whole nodes, and so is every route between the pairs replica_links
/// reads. build_program then makes the same choices and the same ops with chips and links renamed, and
/// on hardware with the same chips and links everywhere (ChipSpec::uniform) the same timelines.
bool congruent_to_first_replica(const Plan& plan, const Topology& topology, int64_t replica);

/// The standalone program of one all-reduce (Combine::sum: partial_sums reduce-scattered, reduced_sums
/// all-gathered) or amax all-gather (Combine::max) of `collective` over `chips` (member t on chips[t]),
/// one block, expanded as build_program expands a stage's. Its timeline needs only the plan's hardware.
Program build_collective_program(const std::vector<int64_t>& chips, const Collective& collective, Combine combine,
                                 const Topology& topology);

/// Start and duration of every op with the blocks starting at `base_position` (deterministic).
Timeline compute_timeline(const Program& program, const Plan& plan, int64_t base_position);

/// Bytes a transfer puts on the modelled links: its values (Op::link_values, else elem_count) at the
/// deployed system's activation_bytes_per_value (the host moves Op::bytes, SPEC's float32 and int32 values).
inline int64_t link_bytes(const Op& op, const chip::ChipSpec& hw) {
  return (op.link_values >= 0 ? op.link_values : op.elem_count) * hw.activation_bytes_per_value;
}

/// Of chip::ffn_hand_off_values(cfg, range, n), the values the links carry at activation_bytes_per_value
/// each. Dense: all. MoE: the expert weights and slot amax, the expert indices at one byte each (packed
/// activation_bytes_per_value to a value), and the SiLU rows of the token-expert pairs the chip runs
/// under the uniform routing its MoE ops are modelled with (moe_up, moe_down), not of every slot the chip
/// may hold, which the host sends (a static schedule's worst case).
int64_t ffn_hand_off_link_values(const chip::ModelConfig& cfg, const chip::ShardRange& range, int64_t n,
                                 const chip::ChipSpec& hw);

/// Cycles of compute op `op` of `program` with the blocks starting at `base_position`, on its chip (slowed by
/// the chip's speed factor).
int64_t compute_op_cycles(const Program& program, const Op& op, const Plan& plan, int64_t base_position);

/// Cycles of every op of `program` with its blocks starting at `base_position`, [ops]: a compute op's
/// (compute_op_cycles), a send's (its route's hop latencies, then its bytes at its slowest link's pace), a
/// receive's 0. The durations of its timeline.
std::vector<int64_t> op_durations(const Program& program, const Plan& plan, int64_t base_position);

/// The timelines of one program at many base positions (a decode program, step after step).
///
/// Booking ops in array order fixes the order in which ops take each unit and each link, and only the
/// attention ops' durations depend on the position. So a timeline is the longest-path recurrence of a
/// graph fixed at construction: an op starts when the last of its predecessors ends (its data
/// dependencies, then the previous user of its unit or of each link of its route, in that order: the
/// first to end latest is the one it waited for). Each position then costs one pass over flat arrays,
/// and none when the attention durations equal the previous position's.
class TimelineSolver {
 public:
  TimelineSolver(const Program& program, const Plan& plan);
  /// The timeline at `base_position`; valid until the next call.
  const Timeline& at(int64_t base_position);
  /// How many times at() has computed a timeline: unchanged across calls whose timelines are identical.
  int64_t solves() const { return solves_; }

 private:
  const Program& program_;
  const Plan& plan_;
  std::vector<int32_t> pred_begin_;       ///< [ops + 1]: predecessors of op i are preds_[pred_begin_[i] ..)
  std::vector<int32_t> preds_;            ///< op indices
  std::vector<int32_t> attention_ops_;    ///< ops whose duration depends on the position
  std::vector<int64_t> attention_cycles_; ///< [attention_ops_] their durations in timeline_
  Timeline timeline_;
  int64_t solves_ = 0;
};

/// Throws ScheduleError naming the chips, link or unit, the ops and the cycles if: a unit or a link
/// direction carries two things at once; a send has no matching receive of the same size and pair; an op
/// starts before an op it needs has finished (for a receive's consumer: before the data arrived).
void verify(const Program& program, const Timeline& timeline);

/// One line describing op i ("chip 3 wo layer 2 [cycles 100..180)").
std::string describe_op(const Program& program, const Timeline& timeline, std::size_t i);

}  // namespace lpurt::partition
