#pragma once
/// \file
/// The plan: which chip holds which part of the model. Tensor parallelism (tp chips per stage: query
/// heads, FFN columns and vocabulary rows split in contiguous ranges, KV heads replicated where tp
/// exceeds them) times pipeline parallelism (pp stages of consecutive layers). Pure arithmetic, no MPI:
/// every rank computes the same plan.
///
/// Example usage:
/// \code
///   lpurt::partition::PlanRequest req;
///   req.n_chips = 8;
///   auto plan = lpurt::partition::make_plan(cfg, hw, req);   // throws PlanError or CapacityError
/// \endcode

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chip/cost_model.hpp"
#include "chip/error.hpp"
#include "chip/hardware.hpp"
#include "chip/model_config.hpp"
#include "chip/shard.hpp"
#include "chip/sram.hpp"
#include "partition/topology.hpp"

namespace lpurt::partition {

/// An impossible layout request.
class PlanError : public Error {
 public:
  explicit PlanError(const std::string& message) : Error(message, ExitCode::config) {}
};


/// Whether a pipeline stage may begin at an MoE FFN's output half (balance_stages). Such a cut lightens
/// the heaviest stage but sends the routing, the slot amax and the held slots' SiLU rows with the
/// activations.
enum class MoeFfnCuts { allowed, whole };

struct PlanRequest {
  int64_t n_chips = 1;       ///< chips of the system; a plan may leave some idle
  int64_t tp = 0;            ///< 0: chosen by the planner
  int64_t pp = 0;            ///< 0: chosen by the planner
  int64_t replicas = 0;      ///< pipeline replicas (data parallel); 0: chosen by the planner
  int64_t context = 0;       ///< KV positions per sequence; 0: the model's max_seq_len
  int64_t batch = 1;         ///< sequences resident at once, spread over the replicas
  int64_t block_tokens = 64; ///< prefill chunk: tokens per phase call
  /// KV positions per replica in one pool of pages its sequences share (serving); 0: each sequence its
  /// whole context (chip::ShardShape::kv_pool_tokens).
  int64_t kv_pool_tokens = 0;
  /// The requests the layout is chosen for (when the planner chooses it): the lowest modelled latency of
  /// a whole request wins, time to first token + (output_tokens - 1) x time per output token. With
  /// prompt_tokens 0 (unknown), the lowest time per output token wins.
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  /// The widest tp the planner tries when it chooses tp: up to a node's chips any width, beyond it whole
  /// nodes (every stage on nodes of its own). 0: a node's chips (wider only when no such layout fits).
  int64_t max_tp = 0;
  /// Where the stages of an MoE model may begin: also inside an MoE FFN, or only between whole ones. Unset:
  /// the planner models both where they differ and keeps the faster.
  std::optional<MoeFfnCuts> moe_ffn_cuts;
};

/// The flat arrays a stage's tensor-parallel group sums over its chips (reduce-scatter, then all-gather):
/// int32 partial sums of a split linear's output rows (wo, w_down), the embedding rows of a token
/// block (each row has one holder; the others contribute -0.0), and the MoE expert slots' int32 w_down
/// sums (the chips holding a slot's expert contribute their columns' partial sums, the others 0).
enum class Reduced : uint8_t { linear_output, embedding, expert_slots };

/// How a group of `members` chips reduces a flat array of `elements`: after the reduce-scatter, member j
/// owns elements [begin(j), end(j)) summed over the group; the all-gather then gives every member all of
/// them. Schedule and engine both read the array here; the steps that get it there (which member sums
/// which range with whom) are the chosen partition::Collective's (partition/collective.hpp).
struct Reduction {
  int64_t elements = 0;
  int64_t members = 1;
  int64_t begin(int64_t member) const { return elements * member / members; }
  int64_t end(int64_t member) const { return begin(member + 1); }
  /// The largest share of one member, elements.
  int64_t max_share() const { return (elements + members - 1) / members; }
};

struct ChipPlan {
  int64_t chip = 0;
  /// The chip of the system's network that holds it (routes, chip_speed_factor): `chip`, unless a tp group
  /// would straddle two dragonfly racks, which make_plan avoids by starting it at the next rack.
  int64_t network_chip = 0;
  int64_t replica = 0;
  int64_t stage = 0;
  int64_t tp_rank = 0;
  chip::ShardRange range;
  chip::SramUsage sram;
};

struct Plan {
  chip::ModelConfig model;
  chip::ChipSpec hardware;
  /// Chips of the system (its network). The plan uses chips 0 .. n_chips() - 1; the rest are idle.
  int64_t system_chips = 1;
  int64_t tp = 1;
  int64_t pp = 1;
  int64_t replicas = 1;                ///< identical pipelines; sequence b runs on replica b % replicas
  int64_t batch = 1;                   ///< sequences; each replica keeps shape.n_slots of them resident
  chip::ShardShape shape;              ///< context, n_slots (sequences per replica), block_tokens
  /// [replicas * pp * tp], chip = (replica * pp + stage) * tp + tp_rank
  std::vector<ChipPlan> chips;
  /// [pp + 1]: stage s holds layer parts [begin[s], begin[s+1]) (chip::LayerPart: 3l layer l's attention,
  /// 3l+1 and 3l+2 its FFN's input and output halves). Chosen to minimise the heaviest stage's weight
  /// bytes, so splits may be uneven, and a stage may begin inside an FFN, dense or MoE.
  std::vector<int64_t> stage_part_begin;

  int64_t chips_per_replica() const { return tp * pp; }

  int64_t n_chips() const { return static_cast<int64_t>(chips.size()); }  ///< chips used
  /// The network chip of plan chip `chip` (itself for a plan without chips: a standalone collective's).
  int64_t network_chip(int64_t chip) const {
    return chips.empty() ? chip : chips[static_cast<std::size_t>(chip)].network_chip;
  }
  int64_t idle_chips() const { return system_chips - n_chips(); }
  const ChipPlan& at(int64_t stage, int64_t tp_rank) const { return at(0, stage, tp_rank); }
  const ChipPlan& at(int64_t replica, int64_t stage, int64_t tp_rank) const {
    return chips[static_cast<std::size_t>((replica * pp + stage) * tp + tp_rank)];
  }
  int64_t replica_of(int64_t sequence) const { return sequence % replicas; }
  int64_t slot_of(int64_t sequence) const { return sequence / replicas; }
  /// Largest batch (over all replicas) whose KV cache fits every chip at this plan's context.
  int64_t max_batch() const;
  /// Largest context whose KV cache fits every chip at this plan's batch.
  int64_t max_context() const;
  /// The most KV positions a replica's SRAM holds with this layout (every chip's SRAM left after its
  /// weights and buffers): the largest shared pool (chip::ShardShape::kv_pool_tokens) that fits.
  int64_t max_kv_tokens() const;
  /// Whether every chip of the plan fits its SRAM with the KV cache and buffers of shape `s`.
  bool fits_every_chip(const chip::ShardShape& s) const;
  int64_t sram_bytes_max() const;
  /// How a stage's chips reduce `what` for a block of n_tokens.
  Reduction reduction(Reduced what, int64_t n_tokens) const;
};

/// The plan for a request; throws PlanError (impossible layout) or CapacityError (does not fit, naming
/// the smallest system that fits and its layout). What the request leaves open is chosen: every layout
/// of at most n_chips chips that fits is a candidate (tp up to PlanRequest::max_tp unless --tp is given,
/// replicas up to the batch), ranked by PlanRequest's objective (time per output token at the full
/// context, on the slowest replica), ties to the layout with fewer chips, then smaller tp, fewer
/// replicas, fewer stages. Candidates are visited in the order of a lower bound on their objective (an
/// analytic one, refined into one from the stages' chains with their collectives and hand-offs modelled
/// exactly, each alone), and the search stops when the bound exceeds the best found: it is exact.
Plan make_plan(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& request);

struct Program;  // partition/schedule.hpp

/// A plan and what make_plan's search modelled of it that the modelled times need again.
struct PlanChoice {
  Plan plan;
  int64_t prompt_tokens = 0;  ///< the request's
  /// batch_prefill_cycles(plan, prompt_tokens) when the search modelled it (its objective was the
  /// request's whole latency), else -1.
  int64_t batch_prefill_cycles = -1;
  /// build_program(plan, topology_for(plan), decode_blocks()) when the search built it, else null.
  std::shared_ptr<const Program> decode_program;
};
/// make_plan, with the chosen layout's batch prefill and decode program as the search modelled them
/// (modelled_times of a PlanChoice uses them instead of modelling them again).
PlanChoice choose_plan(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& request);

/// A lower bound on the chips the model needs: all weights and KV cache over the SRAM left per chip.
int64_t minimum_chips(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& request);

/// Stage boundaries over the model's 3L layer parts (chip::n_parts, the most stages a model splits
/// into), dense or MoE (a stage that begins at an FFN's output half receives the input half's results
/// with the activations: chip::ffn_hand_off_values): every stage gets at least one part and the largest
/// stage weight (embedding on the first stage, final norm and lm_head on the last) is as small as
/// possible. Among such splits it prefers fewer stages beginning inside an FFN, stage by stage (each
/// prefix keeps its best split only, so the count is not always the fewest), then the earliest boundary.
/// With MoeFfnCuts::whole, stages begin only between whole MoE FFNs (dense FFNs may still be cut), so pp
/// is at most chip::n_parts minus the MoE layers. Returns [pp + 1] part indices.
std::vector<int64_t> balance_stages(const chip::ModelConfig& cfg, int64_t pp, MoeFfnCuts moe = MoeFfnCuts::allowed);
/// The most stages balance_stages(cfg, pp, moe) takes.
int64_t max_stages(const chip::ModelConfig& cfg, MoeFfnCuts moe);

/// [begin, end) of part i when n items are split into `parts` contiguous, balanced parts.
inline int64_t split_begin(int64_t n, int64_t parts, int64_t i) { return n * i / parts; }

}  // namespace lpurt::partition
