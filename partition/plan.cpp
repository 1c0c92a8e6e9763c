#include "partition/plan.hpp"

#include "partition/request.hpp"
#include "partition/timing.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <tuple>
#include <unordered_map>

namespace lpurt::partition {

namespace {

chip::ShardShape shape_of(const chip::ModelConfig& cfg, const PlanRequest& r, int64_t replicas) {
  chip::ShardShape s;
  s.context = r.context > 0 ? r.context : cfg.max_seq_len;
  s.n_slots = chip::ceil_div(r.batch, replicas);
  s.block_tokens = std::max<int64_t>(1, std::min(r.block_tokens, s.context));
  s.kv_pool_tokens = r.kv_pool_tokens;
  return s;
}

/// The first network chip of each of a layout's `groups` tp groups (replica by replica, stage by stage): one
/// after another, except that on a dragonfly whose racks are joined only by global links a group that
/// would straddle two racks starts at the next rack, when the system has the chips for that. Its
/// collectives then stay on the rack's own links instead of crossing the one global link between two
/// racks (a tp that divides a rack, 8, 24 or 36, never needs it).
std::vector<int64_t> group_starts(const chip::ChipSpec& hw, int64_t system_chips, int64_t tp, int64_t groups) {
  std::vector<int64_t> contiguous(static_cast<std::size_t>(groups));
  for (int64_t g = 0; g < groups; ++g) contiguous[static_cast<std::size_t>(g)] = g * tp;
  const int64_t rack = Topology(parse_topology(hw.topology), system_chips).rack_chips();
  if (rack == 0 || tp > rack || rack % tp == 0) return contiguous;
  std::vector<int64_t> aligned(static_cast<std::size_t>(groups));
  int64_t next = 0;
  for (int64_t g = 0; g < groups; ++g) {
    if (next / rack != (next + tp - 1) / rack) next = (next / rack + 1) * rack;
    aligned[static_cast<std::size_t>(g)] = next;
    next += tp;
  }
  return next <= system_chips ? aligned : contiguous;
}

/// Tp rank t's FFN columns, and of an MoE model its experts: whole experts over the stage's chips, or
/// with more chips than experts each expert sliced by FFN columns over a group of chips.
void split_ffn(const chip::ModelConfig& cfg, int64_t tp, int64_t t, chip::ShardRange& range) {
  if (cfg.is_moe()) {
    chip::split_experts(cfg, tp, t, range);
    return;
  }
  range.ffn_begin = split_begin(cfg.intermediate_size, tp, t);
  range.ffn_end = split_begin(cfg.intermediate_size, tp, t + 1);
}

/// The plan of a layout on a system of r.n_chips chips; `built_replicas` of its replicas get their chips
/// (the planner probes a layout on its first replica: the others hold the same ranges).
Plan layout(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r, int64_t tp, int64_t pp,
            int64_t replicas, const std::vector<int64_t>& stage_part_begin, int64_t built_replicas) {
  Plan plan;
  plan.model = cfg;
  plan.hardware = hw;
  plan.system_chips = r.n_chips;
  plan.tp = tp;
  plan.pp = pp;
  plan.replicas = built_replicas;
  plan.batch = r.batch;
  plan.shape = shape_of(cfg, r, replicas);
  plan.stage_part_begin = stage_part_begin;
  plan.chips.reserve(static_cast<std::size_t>(built_replicas * pp * tp));
  const std::vector<int64_t> starts = group_starts(hw, r.n_chips, tp, replicas * pp);
  for (int64_t k = 0; k < built_replicas * pp; ++k) {
    const int64_t s = k % pp;
    for (int64_t t = 0; t < tp; ++t) {
      ChipPlan c;
      c.chip = k * tp + t;
      c.network_chip = starts[static_cast<std::size_t>(k)] + t;
      c.replica = k / pp;
      c.stage = s;
      c.tp_rank = t;
      chip::ShardRange& g = c.range;
      g.part_begin = plan.stage_part_begin[static_cast<std::size_t>(s)];
      g.part_end = plan.stage_part_begin[static_cast<std::size_t>(s + 1)];
      g.head_begin = split_begin(cfg.n_heads, tp, t);
      g.head_end = split_begin(cfg.n_heads, tp, t + 1);
      split_ffn(cfg, tp, t, g);
      if (s == 0) {
        g.embed_begin = split_begin(cfg.vocab_size, tp, t);
        g.embed_end = split_begin(cfg.vocab_size, tp, t + 1);
      }
      if (s == pp - 1) {
        g.final_norm = true;
        g.vocab_begin = split_begin(cfg.vocab_size, tp, t);
        g.vocab_end = split_begin(cfg.vocab_size, tp, t + 1);
      }
      c.sram = chip::shard_sram_usage(cfg, g, plan.shape, hw);
      plan.chips.push_back(c);
    }
  }
  return plan;
}

void check_layout(const chip::ModelConfig& cfg, int64_t n_chips, int64_t tp, int64_t pp, int64_t replicas) {
  if (tp < 1 || pp < 1 || replicas < 1)
    throw PlanError("tp, pp and replicas must be at least 1 (got tp=" + std::to_string(tp) + ", pp=" + std::to_string(pp) +
                    ", replicas=" + std::to_string(replicas) + ")");
  if (tp > cfg.n_heads)
    throw PlanError("tp=" + std::to_string(tp) + " exceeds the model's " + std::to_string(cfg.n_heads) +
                    " attention heads (a chip holds at least one query head)");
  if (cfg.is_moe() && tp > cfg.n_experts * cfg.ffn_size())
    throw PlanError("tp=" + std::to_string(tp) + " exceeds the model's " + std::to_string(cfg.n_experts) + " experts x " +
                    std::to_string(cfg.ffn_size()) + " FFN columns (a chip holds at least one column of an expert)");
  if (pp > chip::n_parts(cfg))
    throw PlanError("pp=" + std::to_string(pp) + " exceeds the model's " + std::to_string(chip::n_parts(cfg)) +
                    " layer parts (attention, FFN input half and FFN output half of " + std::to_string(cfg.n_layers) +
                    " layers)");
  if (tp > n_chips / pp / replicas)
    throw PlanError("tp=" + std::to_string(tp) + " x pp=" + std::to_string(pp) +
                    (replicas > 1 ? " x replicas=" + std::to_string(replicas) : std::string()) + " needs " +
                    std::to_string(tp * pp * replicas) + " chips, more than the system's " + std::to_string(n_chips) +
                    " (--chips)");
}

/// Slow chips and links must exist: chips of the system, links between neighbours of its topology.
void check_heterogeneity(const Plan& plan) {
  const chip::ChipSpec& hw = plan.hardware;
  for (const auto& [chip, factor] : hw.chip_speed_factors)
    if (chip >= plan.system_chips)
      throw PlanError("chip_speed_factor." + std::to_string(chip) + ": there are only " + std::to_string(plan.system_chips) +
                      " chips (0.." + std::to_string(plan.system_chips - 1) + ")");
  if (hw.link_bandwidth_factors.empty()) return;
  const Topology topology = topology_for(plan);
  for (const auto& [link, factor] : hw.link_bandwidth_factors) {
    const std::string name = "link_bandwidth_factor." + std::to_string(link.first) + "-" + std::to_string(link.second);
    if (link.second >= plan.system_chips)
      throw PlanError(name + ": there are only " + std::to_string(plan.system_chips) + " chips");
    const int64_t hops = topology.hop_count(link.first, link.second);
    if (hops != 1)
      throw PlanError(name + ": chips " + std::to_string(link.first) + " and " + std::to_string(link.second) +
                      " are not linked directly in the " + hw.topology + " topology of " +
                      std::to_string(plan.system_chips) + " chips (a route between them takes " + std::to_string(hops) +
                      " hops)");
  }
}

void check_fits(const Plan& plan, int64_t minimum) {
  // The bound counts weights and KV cache only; when it does not exceed this layout's chip count, the
  // honest advice is another layout, not a number of chips this one already has.
  const std::string advice = minimum > plan.n_chips()
                                 ? "; the model needs at least " + std::to_string(minimum) + " chips"
                                 : "; try another --tp/--pp layout or more chips";
  for (const auto& c : plan.chips)
    chip::check_fits(c.sram, plan.hardware,
                     "chip " + std::to_string(c.chip) + " (stage " + std::to_string(c.stage) + ", tp rank " +
                         std::to_string(c.tp_rank) + ")",
                     advice);
}

}  // namespace

std::vector<int64_t> balance_stages(const chip::ModelConfig& cfg, int64_t pp, MoeFfnCuts moe) {
  const int64_t n = chip::n_parts(cfg);
  // The boundaries a stage may begin at (and 0 and n): cuts[u] for u in [0, m].
  std::vector<int64_t> cuts;
  for (int64_t i = 0; i <= n; ++i)
    if (i == 0 || i == n || !(moe == MoeFfnCuts::whole && cfg.is_moe() && chip::part_kind(i) == chip::LayerPart::ffn_out))
      cuts.push_back(i);
  const auto m = static_cast<int64_t>(cuts.size()) - 1;
  LPURT_ASSERT(pp >= 1 && pp <= m);
  // Each part's weight bytes, as a chip holding the whole part stores them (every layer alike).
  int64_t part_bytes[chip::parts_per_layer] = {};
  for (int64_t k = 0; k < chip::parts_per_layer; ++k) {
    chip::ShardRange r = chip::whole_model(cfg);
    r.part_begin = k, r.part_end = k + 1;
    r.embed_end = r.vocab_end = 0, r.final_norm = false;
    part_bytes[k] = chip::slice_weight_bytes(cfg, r);
  }
  const int64_t head = chip::tensor_bytes(cfg, {chip::TensorKind::embedding});
  const int64_t tail =
      chip::tensor_bytes(cfg, {chip::TensorKind::lm_head}) + chip::tensor_bytes(cfg, {chip::TensorKind::final_norm});
  std::vector<int64_t> prefix(static_cast<std::size_t>(n + 1), 0);
  for (int64_t i = 0; i < n; ++i)
    prefix[static_cast<std::size_t>(i + 1)] = prefix[static_cast<std::size_t>(i)] + part_bytes[i % chip::parts_per_layer];
  auto at = [](const std::vector<int64_t>& v, int64_t i) { return v[static_cast<std::size_t>(i)]; };
  // Weight of stage s holding cuts [a, b).
  auto cost = [&](int64_t s, int64_t a, int64_t b) {
    return at(prefix, at(cuts, b)) - at(prefix, at(cuts, a)) + (s == 0 ? head : 0) + (s == pp - 1 ? tail : 0);
  };
  // A stage that begins inside an FFN adds the input half's results (the SiLU output, amax, an MoE
  // layer's routing) to the hand-off: among splits with the same heaviest stage, fewer of them. Each
  // prefix keeps only its best (heaviest, then count) split, so a prefix with a heavier stage but fewer
  // such cuts is dropped even where it would tie later: the count is a preference, the heaviest stage is
  // exact.
  auto inside_ffn = [&](int64_t a) { return chip::part_kind(at(cuts, a)) == chip::LayerPart::ffn_out ? 1 : 0; };
  struct Split {
    int64_t heaviest = std::numeric_limits<int64_t>::max();
    int64_t inside_ffn = 0;  ///< stages that begin inside an FFN
    bool operator<(const Split& o) const { return std::tie(heaviest, inside_ffn) < std::tie(o.heaviest, o.inside_ffn); }
  };
  // best[s][b]: the best split (smallest heaviest stage, then fewest stages beginning inside an FFN) when
  // stages 0..s hold cuts [0, b); from[s][b]: the earliest a (stage s holding [a, b)) that gives it.
  // best[s - 1][a].heaviest does not decrease with a, and stage s's cost(a, b) decreases (every part has
  // bytes): the heaviest stage is smallest where they cross, found by bisection; before it the stage's own
  // cost decides and rises, after it the stages before decide, equal along a run of equal heaviest.
  std::vector<std::vector<Split>> best(static_cast<std::size_t>(pp),
                                       std::vector<Split>(static_cast<std::size_t>(m + 1)));
  std::vector<std::vector<int64_t>> from(best.size(), std::vector<int64_t>(static_cast<std::size_t>(m + 1), 0));
  for (int64_t b = 1; b <= m - (pp - 1); ++b) best[0][static_cast<std::size_t>(b)] = {cost(0, 0, b), 0};
  for (int64_t s = 1; s < pp; ++s) {
    const std::vector<Split>& prev = best[static_cast<std::size_t>(s - 1)];
    auto before = [&](int64_t a) -> const Split& { return prev[static_cast<std::size_t>(a)]; };
    for (int64_t b = s + 1; b <= m - (pp - 1 - s); ++b) {
      // The first a in [s, b - 1] where the stages before weigh at least stage s, or b if none.
      int64_t lo = s, hi = b;
      while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (before(mid).heaviest >= cost(s, mid, b)) hi = mid;
        else lo = mid + 1;
      }
      Split chosen;
      int64_t chosen_a = -1;
      auto consider = [&](int64_t a, int64_t heaviest) {
        const Split v{heaviest, before(a).inside_ffn + inside_ffn(a)};
        if (v < chosen) chosen = v, chosen_a = a;
      };
      if (lo - 1 >= s) consider(lo - 1, cost(s, lo - 1, b));
      for (int64_t a = lo; a < b && before(a).heaviest == before(lo).heaviest; ++a) consider(a, before(a).heaviest);
      best[static_cast<std::size_t>(s)][static_cast<std::size_t>(b)] = chosen;
      from[static_cast<std::size_t>(s)][static_cast<std::size_t>(b)] = chosen_a;
    }
  }
  std::vector<int64_t> unit(static_cast<std::size_t>(pp + 1), 0);
  unit[static_cast<std::size_t>(pp)] = m;
  for (int64_t s = pp - 1; s > 0; --s)
    unit[static_cast<std::size_t>(s)] =
        from[static_cast<std::size_t>(s)][static_cast<std::size_t>(unit[static_cast<std::size_t>(s + 1)])];
  std::vector<int64_t> begin(unit.size());
  for (std::size_t s = 0; s < unit.size(); ++s) begin[s] = at(cuts, unit[s]);
  return begin;
}

int64_t max_stages(const chip::ModelConfig& cfg, MoeFfnCuts moe) {
  return chip::n_parts(cfg) - (moe == MoeFfnCuts::whole && cfg.is_moe() ? cfg.n_layers : 0);
}

namespace {
/// Largest value v in [1, hi] for which fits(v) holds (fits is monotone), or 0 if none.
int64_t largest_fitting(int64_t hi, const std::function<bool(int64_t)>& fits) {
  int64_t lo = 0;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
}  // namespace

bool Plan::fits_every_chip(const chip::ShardShape& s) const {
  for (const auto& c : chips)
    if (chip::shard_sram_usage(model, c.range, s, hardware).total_bytes() > hardware.sram_bytes) return false;
  return true;
}

int64_t Plan::max_batch() const {
  auto fits = [&](int64_t slots) {
    chip::ShardShape s = shape;
    s.n_slots = slots;
    s.kv_pool_tokens = 0;  // every slot its whole context
    return fits_every_chip(s);
  };
  return replicas * largest_fitting(int64_t{1} << 20, fits);
}

int64_t Plan::max_context() const {
  auto fits = [&](int64_t context) {
    chip::ShardShape s = shape;
    s.context = context;
    return fits_every_chip(s);
  };
  return largest_fitting(model.max_seq_len, fits);
}

int64_t Plan::max_kv_tokens() const {
  auto fits = [&](int64_t tokens) {
    chip::ShardShape s = shape;
    s.kv_pool_tokens = tokens;
    return fits_every_chip(s);
  };
  return largest_fitting(int64_t{1} << 40, fits);
}

Reduction Plan::reduction(Reduced what, int64_t n_tokens) const {
  const int64_t values_per_token =
      what == Reduced::expert_slots ? model.n_experts_per_token * model.hidden_size : model.hidden_size;
  return {n_tokens * values_per_token, tp};
}

int64_t Plan::sram_bytes_max() const {
  int64_t m = 0;
  for (const auto& c : chips) m = std::max(m, c.sram.total_bytes());
  return m;
}

int64_t minimum_chips(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r) {
  const chip::ShardShape shape = shape_of(cfg, r, 1);
  const int64_t kv_bytes =
      2 * cfg.n_layers * cfg.kv_size() * shape.kv_tokens() * hw.kv_bytes_per_value;
  const int64_t usable = hw.sram_bytes - hw.program_reserve_bytes;
  return chip::ceil_div(cfg.weight_bytes() + kv_bytes, usable);
}

namespace {

/// Cycles of a transfer of `bytes` over one hop: the schedule's formula (partition/schedule.cpp) at its
/// smallest, so no transfer of that size takes less.
int64_t one_hop_cycles(const chip::ChipSpec& hw, int64_t bytes) {
  const double seconds = hw.hop_latency_ns * 1e-9 + static_cast<double>(bytes) / hw.link_bytes_per_s;
  return static_cast<int64_t>(std::ceil(seconds * hw.clock_hz));
}

/// Lower bounds on a layout's decode period and prefill (cycles), from the model's shape alone, for chips
/// and links at nominal speed. They let the planner rule out most layouts without modelling them.
///
/// A block of n tokens passes each stage's chips, which stream their share of every matrix (at least
/// the average share, since a stage's collectives wait for its slowest chip), and wait for each of the
/// stage's collectives and for the transfer to the next stage, each at least one hop with its bytes. A
/// chip's compute ops run one after another, so a stage takes at least its average share for every
/// block of every sequence of its replica; and a stage-to-stage link carries every block. Mixtral experts
/// are left out (routing decides which are streamed): the bounds stay bounds.
class LayoutBound {
 public:
  /// Decode periods are bounded at `position`, the last of the context.
  LayoutBound(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, int64_t position)
      : cfg_(cfg), hw_(hw), position_(position) {
    const int64_t d = cfg.hidden_size;
    const int64_t attention = (2 * cfg.q_size() + 2 * cfg.kv_size()) * d;
    const int64_t ffn = cfg.is_moe() ? 0 : 3 * cfg.intermediate_size * d;
    matrix_bytes_ = cfg.n_layers * (attention + ffn) + cfg.vocab_size * d;
  }

  int64_t period(int64_t tp, int64_t pp, int64_t n_slots) const {
    // Every layer's attention at the position, on a chip with the fewest heads a tp split gives.
    const int64_t attention = chip::CostModel(hw_).attention_cycles(cfg_.n_heads / tp, std::max<int64_t>(1, cfg_.n_kv_heads / tp),
                                                                    cfg_.head_dim(), position_, 1);
    return std::max(latency(tp, pp, 1) + cfg_.n_layers * attention, n_slots * stage_cycles(tp, pp, 1));
  }

  /// Prefill of n_sequences prompts of prompt_tokens, in blocks of block_tokens, on one replica. (The
  /// whole batch's prefill, every replica at once, takes at least as long: adding ops to a booking never
  /// lets an op start earlier.)
  int64_t prefill(int64_t tp, int64_t pp, int64_t n_sequences, int64_t prompt_tokens, int64_t block_tokens) const {
    const int64_t blocks = n_sequences * chip::ceil_div(prompt_tokens, block_tokens);
    const int64_t smallest_block = prompt_tokens - (chip::ceil_div(prompt_tokens, block_tokens) - 1) * block_tokens;
    const int64_t link = pp > 1 ? one_hop_cycles(hw_, hw_.activation_bytes_per_value * smallest_block * cfg_.hidden_size) : 0;
    return std::max({latency(tp, pp, std::min(prompt_tokens, block_tokens)), blocks * stage_cycles(tp, pp, smallest_block),
                     blocks * link});
  }

 private:
  /// A matrix of B bytes for n tokens takes at least max(B / weight-path rate, B x n / MAC rate).
  int64_t matrix_cycles(int64_t bytes, int64_t n_tokens) const {
    return std::max(bytes / hw_.weight_path_bytes_per_cycle(), bytes * n_tokens / hw_.mxm_macs_per_cycle);
  }
  /// Collectives of one attention part and one FFN part for n tokens (none with one chip a stage).
  std::pair<int64_t, int64_t> collective_cycles(int64_t tp, int64_t n_tokens) const {
    if (tp == 1) return {0, 0};
    const int64_t d = cfg_.hidden_size;
    // A stage over several nodes has members two links apart (inter-node links join chips of the same
    // index), and each collective carries every member's data to every other: at least two hops' latency
    // in a row, whichever way it is routed or relayed.
    const int64_t relay = tp > Topology::chips_per_node ? static_cast<int64_t>(hw_.hop_latency_ns * 1e-9 * hw_.clock_hz) : 0;
    auto hop = [&](int64_t bytes) { return one_hop_cycles(hw_, bytes) + relay; };
    // A reduce-scatter and an all-gather, each sending slices of a flat array of `elements`.
    auto sum = [&](int64_t elements) { return 2 * hop(hw_.activation_bytes_per_value * (elements / tp)); };
    const int64_t attention = hop(hw_.activation_bytes_per_value * n_tokens) + sum(n_tokens * d);  // after the amax all-gather
    const int64_t ffn = cfg_.is_moe() ? sum(n_tokens * cfg_.n_experts_per_token * d) : attention;
    return {attention, ffn};
  }
  /// The average stage's time for a block of n tokens.
  int64_t stage_cycles(int64_t tp, int64_t pp, int64_t n_tokens) const {
    const auto [attention, ffn] = collective_cycles(tp, n_tokens);
    return matrix_cycles(matrix_bytes_ / (tp * pp), n_tokens) + cfg_.n_layers * (attention + ffn) / pp;
  }
  /// One block of n tokens through the whole pipeline.
  int64_t latency(int64_t tp, int64_t pp, int64_t n_tokens) const {
    const auto [attention, ffn] = collective_cycles(tp, n_tokens);
    const int64_t embedding = tp > 1 ? 2 * one_hop_cycles(hw_, hw_.activation_bytes_per_value * (n_tokens * cfg_.hidden_size / tp)) : 0;
    return matrix_cycles(matrix_bytes_ / tp, n_tokens) + cfg_.n_layers * (attention + ffn) + embedding +
           (pp - 1) * one_hop_cycles(hw_, hw_.activation_bytes_per_value * n_tokens * cfg_.hidden_size);
  }

  const chip::ModelConfig& cfg_;
  const chip::ChipSpec& hw_;
  int64_t position_ = 0;
  int64_t matrix_bytes_ = 0;
};

/// Tighter lower bounds on a layout's decode pace and prefill (cycles), from its stages' chains, for chips
/// and links at nominal speed: what the analytic LayoutBound cannot see, collectives across nodes and
/// racks and hand-offs over long or shared routes, modelled exactly, each on its own.
///
/// A timeline is a longest path: an op never starts earlier for more ops around it. So a collective whose
/// members get their inputs no earlier than m ends on each member no earlier than m plus what it takes
/// that member alone on an idle network (its chosen algorithm's standalone program, the schedule's own
/// expansion), and no earlier than its last input (every member's result sums or maxes every member's
/// values). A chip's compute ops run one after another, each segment between two collectives after the
/// collective before it: the earliest chip done with a segment is done no earlier than the earliest to
/// start it plus the shortest such segment over the chips (exact durations). A stage's chips get a block
/// no earlier than the previous stage's earliest end plus the first of its hand-off transfers to end
/// alone, and the last of them, which the stage's first collective waits for, ends no earlier than the
/// last to end alone. Summed along a block's way: a bound on its trip, and each stage's sum one on that
/// stage's span and on its time per block.
class ChainBound {
 public:
  ChainBound(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r)
      : cfg_(cfg), hw_(hw), request_(r), topology_(parse_topology(hw.topology), r.n_chips) {}

  /// Bounds on the pace of a decode token at `position` through replica 0 of a tp x pp layout of
  /// `replicas` replicas, its tp groups placed as layout() places them. Once the latency exceeds
  /// `enough_cycles`, the stages after are left out (a weaker bound, and no more collectives modelled) and
  /// `complete` is set false.
  DecodePace decode(int64_t tp, int64_t pp, int64_t replicas, const std::vector<int64_t>& stage_part_begin,
                    int64_t position, int64_t enough_cycles, bool& complete) {
    const Pass p = pass(tp, pp, replicas, stage_part_begin, {0, 1, true, 0}, position, enough_cycles);
    complete = p.complete;
    DecodePace pace;
    for (int64_t s = 0; s < pp; ++s) {
      pace.latency_cycles += p.hand_off_cycles[static_cast<std::size_t>(s)] + p.stage_cycles[static_cast<std::size_t>(s)];
      pace.busiest_stage_cycles = std::max(pace.busiest_stage_cycles, p.stage_cycles[static_cast<std::size_t>(s)]);
    }
    return pace;
  }

  /// A bound on the prefill of n_sequences prompts in `blocks` through replica 0 (as decode()): for each
  /// stage, the first block's way to it, every block through it (a chip takes a block's first op after
  /// its last op of the block before; middle blocks at position 0 at least, attention only grows with
  /// it), and the last block's way from it to the end; the same with every block's hand-off over the
  /// busiest link into the stage (one transfer at a time) in place of the stage.
  int64_t prefill(int64_t tp, int64_t pp, int64_t replicas, const std::vector<int64_t>& stage_part_begin,
                  const std::vector<Block>& blocks, int64_t n_sequences) {
    if (blocks.empty()) return 0;
    const Block& last_block = blocks.back();
    constexpr int64_t all = std::numeric_limits<int64_t>::max();
    const Pass last = pass(tp, pp, replicas, stage_part_begin, {0, last_block.n_tokens, true, 0}, last_block.position_offset, all);
    const Pass middle = blocks.size() > 1 ? pass(tp, pp, replicas, stage_part_begin, {0, blocks.front().n_tokens, false, 0}, 0, all) : last;
    const auto middle_blocks = static_cast<int64_t>(blocks.size()) - 1;
    int64_t bound = 0, before = 0;  // before: the first block's way to stage s
    for (std::size_t s = 0; s < static_cast<std::size_t>(pp); ++s) {
      before += middle.hand_off_cycles[s];
      int64_t after = 0;
      for (std::size_t j = s + 1; j < static_cast<std::size_t>(pp); ++j) after += last.hand_off_cycles[j] + last.stage_cycles[j];
      const int64_t through = n_sequences * (middle_blocks * middle.stage_cycles[s] + last.stage_cycles[s]);
      int64_t carried = 0;  // the busiest link's cycles carrying every block into stage s
      if (s > 0 && middle.hand_offs[s] != nullptr && last.hand_offs[s] != nullptr)
        for (const auto& [link, cycles] : middle.hand_offs[s]->link_cycles) {
          const auto in_last = last.hand_offs[s]->link_cycles.find(link);
          const int64_t last_cycles = in_last != last.hand_offs[s]->link_cycles.end() ? in_last->second : 0;
          carried = std::max(carried, n_sequences * (middle_blocks * cycles + last_cycles));
        }
      bound = std::max({bound, before + through + after, before - middle.hand_off_cycles[s] + carried + after});
      before += middle.stage_cycles[s];
    }
    return bound;
  }

 private:
  /// The hand-off between two stages' chips alone: the first and the last transfer's end, and the cycles
  /// each link carries it.
  struct HandOff {
    int64_t first_cycles = 0, last_cycles = 0;
    std::map<std::pair<int64_t, int64_t>, int64_t> link_cycles;  ///< each link's cycles carrying it
  };
  /// One block's way through replica 0's stages: [pp] each stage's chain, and the hand-off into it (0 for
  /// stage 0), with what its first collective waits beyond its own time for the last transfer. Stages
  /// after the one where the way exceeds enough_cycles are left at 0.
  struct Pass {
    std::vector<int64_t> stage_cycles, hand_off_cycles;
    std::vector<const HandOff*> hand_offs;  ///< [pp] the hand-off into the stage alone (null for stage 0)
    bool complete = true;
  };
  /// A compute segment of one block over a stage's chips: its shortest and its longest.
  struct Span {
    int64_t fewest_cycles = 0, most_cycles = 0;
  };
  /// A tp's compute segments of one block: each part's segments before its two collectives (the amax
  /// all-gather and the sum), and after them.
  struct Segments {
    Span embed, attention[2], ffn[2];
    int64_t attention_tail_cycles = 0, ffn_tail_cycles = 0, logits_cycles = 0;  ///< shortest
  };
  /// A tp group's collectives of one block, each the earliest member's end alone.
  struct GroupCosts {
    int64_t attention[2] = {0, 0}, ffn[2] = {0, 0};  ///< the amax all-gather, the sum
    int64_t embedding_cycles = 0;
  };

  Pass pass(int64_t tp, int64_t pp, int64_t replicas, const std::vector<int64_t>& stage_part_begin, const Block& block,
            int64_t position, int64_t enough_cycles) {
    // The parts as Builder::block lays them out (chip::LayerPart): attention, the FFN's input half, its
    // output half.
    LPURT_ASSERT(stage_part_begin.back() == chip::n_parts(cfg_));
    const Segments& w = segments(tp, block, position);
    const std::vector<int64_t> starts = group_starts(hw_, request_.n_chips, tp, replicas * pp);
    Pass p;
    p.stage_cycles.assign(static_cast<std::size_t>(pp), 0);
    p.hand_off_cycles.assign(static_cast<std::size_t>(pp), 0);
    p.hand_offs.assign(static_cast<std::size_t>(pp), nullptr);
    int64_t way = 0, s = 0;
    for (; s < pp && way <= enough_cycles; ++s) {
      const int64_t start = starts[static_cast<std::size_t>(s)];
      const int64_t begin = stage_part_begin[static_cast<std::size_t>(s)], end = stage_part_begin[static_cast<std::size_t>(s + 1)];
      // A collective ends no earlier than the earliest member's input plus its own time, nor before the
      // last member's input (every member's result needs every input).
      const GroupCosts& g = group(start, tp, block.n_tokens);
      auto through = [](const Span& segment, int64_t collective_cycles) {
        return std::max(segment.fewest_cycles + collective_cycles, segment.most_cycles);
      };
      // Each part as the schedule lays it out: attention, its amax all-gather, wo, the sum, the residual; an
      // FFN likewise.
      const int64_t attention = through(w.attention[0], g.attention[0]) + through(w.attention[1], g.attention[1]) + w.attention_tail_cycles;
      const int64_t ffn_in = through(w.ffn[0], g.ffn[0]), ffn_out = through(w.ffn[1], g.ffn[1]) + w.ffn_tail_cycles;
      int64_t chain = 0;
      for (int64_t part = begin; part < end; ++part) {
        switch (chip::part_kind(part)) {
          case chip::LayerPart::attention: chain += attention; break;
          case chip::LayerPart::ffn_in: chain += ffn_in; break;
          case chip::LayerPart::ffn_out: chain += ffn_out; break;
        }
      }
      if (s == 0) chain += through(w.embed, g.embedding_cycles);
      if (s == pp - 1 && block.with_logits) chain += w.logits_cycles;
      p.stage_cycles[static_cast<std::size_t>(s)] = chain;
      way += chain;
      if (s == 0) continue;
      // The stage's first collective waits for the last transfer beyond what its chain already counts.
      const chip::LayerPart first_part = chip::part_kind(begin);
      const HandOff& h = hand_off(starts[static_cast<std::size_t>(s - 1)], start, tp, block.n_tokens,
                                  first_part == chip::LayerPart::ffn_out);
      // The stage's first collective and the segment before it.
      const int k = first_part == chip::LayerPart::ffn_out ? 1 : 0;
      const Span& head = first_part == chip::LayerPart::attention ? w.attention[k] : w.ffn[k];
      const int64_t first_collective = first_part == chip::LayerPart::attention ? g.attention[k] : g.ffn[k];
      const int64_t counted = std::max(first_collective, head.most_cycles - head.fewest_cycles);
      p.hand_off_cycles[static_cast<std::size_t>(s)] = h.first_cycles + std::max<int64_t>(0, h.last_cycles - h.first_cycles - counted);
      p.hand_offs[static_cast<std::size_t>(s)] = &h;
      way += p.hand_off_cycles[static_cast<std::size_t>(s)];
    }
    p.complete = s == pp;
    return p;
  }

  const Segments& segments(int64_t tp, const Block& block, int64_t position) {
    const auto key = std::make_tuple(tp, block.n_tokens, position);
    auto it = segments_.find(key);
    if (it != segments_.end()) return it->second;
    // Every chip's ops as a stage holding the whole model has them (a stage's chips hold the same heads,
    // columns and experts at every pp; the embedding and vocabulary ranges as the first and last stage's).
    const Plan stage = layout(cfg_, hw_, request_, tp, 1, 1, {0, chip::n_parts(cfg_)}, 1);
    Program program;
    program.blocks = {block};
    auto span = [&](std::initializer_list<OpKind> kinds) {
      Span out{std::numeric_limits<int64_t>::max(), 0};
      for (int64_t t = 0; t < tp; ++t) {
        int64_t cycles = 0;
        for (const OpKind kind : kinds) {
          Op op;
          op.kind = kind, op.chip = static_cast<int32_t>(t);
          cycles += compute_op_cycles(program, op, stage, position);
        }
        out.fewest_cycles = std::min(out.fewest_cycles, cycles);
        out.most_cycles = std::max(out.most_cycles, cycles);
      }
      return out;
    };
    auto shortest = [&](std::initializer_list<OpKind> kinds) { return span(kinds).fewest_cycles; };
    Segments w;
    w.embed = span({OpKind::embed});
    w.attention[0] = span({OpKind::attn_norm, OpKind::qkv, OpKind::attention});
    w.attention[1] = span({OpKind::wo});
    w.attention_tail_cycles = shortest({OpKind::attn_residual});
    w.ffn[0] = cfg_.is_moe() ? span({OpKind::ffn_norm, OpKind::moe_up}) : span({OpKind::ffn_norm, OpKind::gate_up, OpKind::silu});
    w.ffn[1] = span({cfg_.is_moe() ? OpKind::moe_down : OpKind::down});
    w.ffn_tail_cycles = shortest({OpKind::ffn_residual});
    w.logits_cycles = shortest({OpKind::final_norm, OpKind::lm_head});
    return segments_.emplace(key, w).first->second;
  }

  const GroupCosts& group(int64_t start, int64_t tp, int64_t n_tokens) {
    const auto key = std::make_tuple(start, tp, n_tokens);
    auto it = groups_.find(key);
    if (it != groups_.end()) return it->second;
    const int64_t d = cfg_.hidden_size, k = cfg_.n_experts_per_token;
    GroupCosts g;
    if (tp > 1) {
      // Every collective's array for a block of n tokens (Plan::reduction, the amax of each token or slot).
      const int64_t max = alone(start, tp, n_tokens, Combine::max), sum = alone(start, tp, n_tokens * d, Combine::sum);
      g.attention[0] = max, g.attention[1] = sum;
      g.ffn[0] = cfg_.is_moe() ? alone(start, tp, n_tokens * k, Combine::max) : max;
      g.ffn[1] = cfg_.is_moe() ? alone(start, tp, n_tokens * k * d, Combine::sum) : sum;
      g.embedding_cycles = sum;
    }
    return groups_.emplace(key, g).first->second;
  }

  /// Groups whose collectives take the same routes up to a shift of every chip, and so the same times: a
  /// group inside one node (one-hop routes) by its offset in the node; on a dragonfly, a group of whole
  /// nodes inside one rack, or anywhere when the nodes are all-to-all (every route through a chip of the
  /// source node and of the destination node, both in the group). Other groups by their first chip.
  int64_t route_class(int64_t start, int64_t tp) const {
    const int64_t node = Topology::chips_per_node, last = start + tp - 1;
    if (topology_.node_of(start) == topology_.node_of(last)) return start % node - node;
    const int64_t rack = topology_.rack_chips();
    const bool whole_nodes = start % node == 0 && tp % node == 0;
    if (topology_.kind() == TopologyKind::dragonfly && whole_nodes && (rack == 0 || start / rack == last / rack))
      return -1 - node;
    return start;
  }

  /// The earliest end over the members of the collective the schedule chooses for network chips
  /// [start, start + tp) and `elements`, alone: each member is done when its last reduction and its last
  /// receive are.
  int64_t alone(int64_t start, int64_t tp, int64_t elements, Combine combine) {
    const auto key = std::make_tuple(route_class(start, tp), tp, elements, combine);
    auto it = alone_.find(key);
    if (it != alone_.end()) return it->second;
    std::vector<int64_t> chips(static_cast<std::size_t>(tp));
    for (int64_t t = 0; t < tp; ++t) chips[static_cast<std::size_t>(t)] = start + t;
    const Collective c = choose_collective(chips, elements, combine, topology_, hw_);
    const Program program = build_collective_program(chips, c, combine, topology_);
    Plan bare;
    bare.hardware = hw_;
    const Timeline timeline = compute_timeline(program, bare, 0);
    int64_t earliest = std::numeric_limits<int64_t>::max();
    for (const int64_t chip : chips) {
      int64_t done = 0;
      for (const int32_t i : program.chip_ops[static_cast<std::size_t>(chip)])
        if (program.ops[static_cast<std::size_t>(i)].kind != OpKind::send) done = std::max(done, timeline.end_cycles(static_cast<std::size_t>(i)));
      earliest = std::min(earliest, done);
    }
    return alone_.emplace(key, earliest).first->second;
  }

  /// The transfers of a block's activations from stage chips (prev_start + t) to (start + t), in the
  /// schedule's order, alone on an idle network: each takes its route's links when their previous transfer
  /// is done (between two racks, one global link carries them all), in the schedule's formula. Into a
  /// stage that begins inside an FFN, each carries its FFN input half's results too (the SiLU output of
  /// its columns, the amax, an MoE layer's routing: ffn_hand_off_link_values). With tp
  /// chips the schedule may split the activations over the transfers and gather them in the stage
  /// (Builder::hand_off): each transfer is counted with the smallest share, so that the bound holds for
  /// either (a whole copy carries more, and a split one is gathered after it arrives).
  const HandOff& hand_off(int64_t prev_start, int64_t start, int64_t tp, int64_t n_tokens, bool inside_ffn) {
    const auto key = std::make_tuple(prev_start, start, tp, n_tokens, inside_ffn);
    auto it = hand_offs_.find(key);
    if (it != hand_offs_.end()) return it->second;
    HandOff h;
    h.first_cycles = std::numeric_limits<int64_t>::max();
    std::map<std::pair<int64_t, int64_t>, int64_t> link_free;  // the cycle each link is free from
    std::vector<Hop> hops;
    for (int64_t t = 0; t < tp; ++t) {
      int64_t ffn_values = 0;
      if (inside_ffn) {
        chip::ShardRange range;
        split_ffn(cfg_, tp, t, range);
        ffn_values = ffn_hand_off_link_values(cfg_, range, n_tokens, hw_);
      }
      const int64_t activations = tp > 1 ? n_tokens * cfg_.hidden_size / tp : n_tokens * cfg_.hidden_size;
      const int64_t bytes = (activations + ffn_values) * hw_.activation_bytes_per_value;
      hops.clear();
      topology_.route(prev_start + t, start + t, hops);
      const double seconds = static_cast<double>(hops.size()) * hw_.hop_latency_ns * 1e-9 + static_cast<double>(bytes) / hw_.link_bytes_per_s;
      int64_t begin = 0;
      for (const Hop& hop : hops) begin = std::max(begin, link_free[{hop.from, hop.to}]);
      const int64_t cycles = static_cast<int64_t>(std::ceil(seconds * hw_.clock_hz)), end = begin + cycles;
      for (const Hop& hop : hops) link_free[{hop.from, hop.to}] = end;
      for (const Hop& hop : hops) h.link_cycles[{hop.from, hop.to}] += cycles;
      h.first_cycles = std::min(h.first_cycles, end);
      h.last_cycles = std::max(h.last_cycles, end);
    }
    return hand_offs_.emplace(key, h).first->second;
  }

  const chip::ModelConfig& cfg_;
  const chip::ChipSpec& hw_;
  const PlanRequest& request_;
  Topology topology_;
  std::map<std::tuple<int64_t, int64_t, int64_t>, Segments> segments_;   ///< by tp, block tokens, position
  std::map<std::tuple<int64_t, int64_t, int64_t>, GroupCosts> groups_;  ///< by start, tp, block tokens
  std::map<std::tuple<int64_t, int64_t, int64_t, Combine>, int64_t> alone_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, bool>, HandOff> hand_offs_;  ///< by the two starts, tp, block tokens, inside an FFN
};

struct Candidate {
  int64_t tp = 1, pp = 1, replicas = 1;
  /// Whether its stages may begin inside an MoE FFN (balance_stages): an MoE cut lightens the heaviest
  /// stage but adds the routing and the SiLU rows to its hand-off, so where the two splits differ both
  /// are candidates.
  MoeFfnCuts moe = MoeFfnCuts::allowed;
  int64_t period_bound_cycles = 0;   ///< LayoutBound::period
  /// A bound on the prefill of its first replica, when the objective has it: LayoutBound::prefill, then
  /// ChainBound::prefill's if higher.
  int64_t prefill_bound_cycles = 0;
  int64_t objective_bound_cycles = 0;
  int64_t chips() const { return tp * pp * replicas; }
  /// Ties between equally good layouts: fewer chips, then smaller tp, fewer replicas, fewer stages, MoE
  /// FFNs whole (fewer bytes handed off).
  bool before(const Candidate& o) const {
    return std::make_tuple(chips(), tp, replicas, pp, moe == MoeFfnCuts::allowed) <
           std::make_tuple(o.chips(), o.tp, o.replicas, o.pp, o.moe == MoeFfnCuts::allowed);
  }
};

/// One replica of a (tp, pp) layout at nominal speed, modelled once for every replica count: its decode
/// pace, and its prefill of n sequences from the programs of one block (a middle one and the last, with
/// the logits), chained as build_program lays out the blocks of n prompts one after another.
struct Pipeline {
  Plan plan;
  DecodePace pace;
  /// Its decode program, until the search takes it (the winner's goes on to the modelled times).
  std::shared_ptr<const Program> decode;

  Pipeline(Plan probe, int64_t decode_position) : plan(std::move(probe)) {
    decode = std::make_shared<const Program>(build_program(plan, topology_for(plan), decode_blocks()));
    pace = decode_pace(plan, *decode, compute_timeline(*decode, plan, decode_position));
  }

  /// A lower bound on the prefill of n sequences of `blocks`: every unit and link is first used no earlier
  /// than in the first block alone, serves every block's ops one at a time (a middle block's at position
  /// 0 at least: attention only grows with the position), and is followed by its chain in the last block.
  int64_t prefill_bound_cycles(const std::vector<Block>& blocks, int64_t n_sequences) {
    const Uses& u = uses(blocks);
    const auto middle_blocks = static_cast<int64_t>(blocks.size()) - 1;
    int64_t bound = u.first_makespan_cycles;
    for (const auto& [key, last] : u.last) {
      const auto first = u.first.find(key);
      const auto middle = u.middle.find(key);
      const int64_t busy = middle_blocks * (middle != u.middle.end() ? middle->second.busy_cycles : 0) + last.busy_cycles;
      bound = std::max(bound, (first != u.first.end() ? first->second.head_cycles : 0) + n_sequences * busy + last.tail_cycles);
    }
    return bound;
  }

  /// The prefill of n sequences of `blocks` on this replica: the makespan of their program.
  int64_t prefill_cycles(const std::vector<Block>& blocks, int64_t n_sequences) {
    auto it = prefill_cycles_by_sequences_.find(n_sequences);
    if (it != prefill_cycles_by_sequences_.end()) return it->second;
    const Programs& p = programs(blocks);
    ChainedSolver solver(plan.n_chips());
    for (int64_t s = 0; s < n_sequences; ++s)
      for (std::size_t b = 0; b < blocks.size(); ++b)
        solver.append(b + 1 < blocks.size() ? *p.middle_link : *p.last_link, blocks[b].position_offset);
    return prefill_cycles_by_sequences_[n_sequences] = solver.makespan_cycles();
  }

  /// Frees the one-block programs (built again if another replica count needs them): the search then
  /// holds one layout's programs at a time and reuses their memory.
  void release_programs() { programs_.reset(); }

 private:
  struct Programs {
    Program middle, last;  ///< one block each, at position 0 (middle: only with two blocks or more)
    std::unique_ptr<ChainedSolver::Link> middle_link, last_link;
  };
  /// Units and links of the first block (at position 0), of a middle one (at position 0) and of the last.
  struct Uses {
    std::unordered_map<int64_t, ResourceUse> first, middle, last;
    int64_t first_makespan_cycles = 0;
  };
  std::unique_ptr<Programs> programs_;
  std::unique_ptr<Uses> uses_;
  std::map<int64_t, int64_t> prefill_cycles_by_sequences_;

  const Programs& programs(const std::vector<Block>& blocks) {
    if (programs_) return *programs_;
    programs_ = std::make_unique<Programs>();
    Programs& p = *programs_;
    const Topology topology = topology_for(plan);
    p.last = build_program(plan, topology, {{0, blocks.back().n_tokens, true, 0}});
    p.last_link = std::make_unique<ChainedSolver::Link>(p.last, plan);
    if (blocks.size() > 1) {
      p.middle = build_program(plan, topology, {{0, blocks.front().n_tokens, false, 0}});
      p.middle_link = std::make_unique<ChainedSolver::Link>(p.middle, plan);
    }
    return p;
  }

  /// The timeline of one block's program alone, from its chained form (no second solver).
  Timeline alone(const ChainedSolver::Link& link, int64_t base_position) const {
    ChainedSolver solver(plan.n_chips());
    solver.append(link, base_position);
    return solver.last_timeline();
  }

  const Uses& uses(const std::vector<Block>& blocks) {
    if (uses_) return *uses_;
    const Programs& p = programs(blocks);
    uses_ = std::make_unique<Uses>();
    Uses& u = *uses_;
    const Timeline last_timeline = alone(*p.last_link, blocks.back().position_offset);
    u.last = resource_uses(p.last, last_timeline);
    if (blocks.size() == 1) {
      u.first = u.last;
      u.first_makespan_cycles = last_timeline.makespan_cycles;
      return u;
    }
    const Timeline first_timeline = alone(*p.middle_link, 0);
    u.first = resource_uses(p.middle, first_timeline);
    u.middle = u.first;
    u.first_makespan_cycles = first_timeline.makespan_cycles;
    return u;
  }
};

/// Stage boundaries for each pp and kind of MoE cut, computed once per make_plan.
class StageCache {
 public:
  explicit StageCache(const chip::ModelConfig& cfg) : cfg_(cfg) {}
  const std::vector<int64_t>& operator()(int64_t pp, MoeFfnCuts moe = MoeFfnCuts::allowed) {
    auto it = by_pp_.find({pp, moe});
    if (it == by_pp_.end()) it = by_pp_.emplace(std::make_pair(pp, moe), balance_stages(cfg_, pp, moe)).first;
    return it->second;
  }
  /// The kinds of split worth modelling for pp stages: the request's, or both where they differ.
  std::vector<MoeFfnCuts> kinds(int64_t pp, const PlanRequest& r) {
    if (!cfg_.is_moe()) return {MoeFfnCuts::allowed};  // the same split either way
    if (r.moe_ffn_cuts) {
      if (pp > max_stages(cfg_, *r.moe_ffn_cuts)) return {};
      return {*r.moe_ffn_cuts};
    }
    if (pp <= max_stages(cfg_, MoeFfnCuts::whole) && (*this)(pp, MoeFfnCuts::whole) != (*this)(pp))
      return {MoeFfnCuts::allowed, MoeFfnCuts::whole};
    return {MoeFfnCuts::allowed};
  }

 private:
  const chip::ModelConfig& cfg_;
  std::map<std::pair<int64_t, MoeFfnCuts>, std::vector<int64_t>> by_pp_;
};

/// The error for a system too small for any layout: the smallest system that fits, and its layout.
[[noreturn]] void throw_too_small(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r,
                                  StageCache& stages) {
  const int64_t minimum = minimum_chips(cfg, hw, r);
  // The SRAM bound is only a lower limit (parts do not divide evenly over stages): search upward from it,
  // one pipeline, every tp. make_plan tries tp across nodes whenever no layout within a node fits, so the
  // smallest system over all tp is the smallest on which it succeeds.
  int64_t smallest = std::numeric_limits<int64_t>::max(), smallest_tp = 0;
  const int64_t max_tp = r.tp > 0 ? r.tp : cfg.n_heads;
  for (int64_t tp = r.tp > 0 ? r.tp : 1; tp <= max_tp; ++tp) {
    for (int64_t pp = r.pp > 0 ? r.pp : std::max<int64_t>(1, chip::ceil_div(minimum, tp));
         pp <= (r.pp > 0 ? r.pp : chip::n_parts(cfg)) && tp * pp < smallest; ++pp) {
      if (layout(cfg, hw, r, tp, pp, 1, stages(pp), 1).sram_bytes_max() > hw.sram_bytes) continue;
      smallest = tp * pp, smallest_tp = tp;
      break;
    }
  }
  const std::string sizes = chip::format_bytes(static_cast<double>(cfg.weight_bytes())) +
                            " of weights plus the KV cache fill " + std::to_string(minimum) + " chips of " +
                            chip::format_bytes(static_cast<double>(hw.sram_bytes)) + " SRAM";
  const std::string head = "the model does not fit on " + std::to_string(r.n_chips) + " chip" + (r.n_chips == 1 ? "" : "s");
  if (smallest_tp == 0)
    throw chip::CapacityError(head + ": no layout fits on any number of chips (every chip of tp up to " +
                              std::to_string(max_tp) + " x pp up to " + std::to_string(chip::n_parts(cfg)) +
                              " overflows its SRAM; " + sizes + "): use a shorter --context or a smaller --batch");
  throw chip::CapacityError(head + ": it needs at least " + std::to_string(smallest) + " chips (the smallest layout "
                            "that fits is tp " + std::to_string(smallest_tp) + " x pp " +
                            std::to_string(smallest / smallest_tp) + "; " + sizes + ")");
}

}  // namespace

Plan make_plan(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r) {
  return choose_plan(cfg, hw, r).plan;
}

PlanChoice choose_plan(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r) {
  cfg.validate();
  hw.validate();
  // Before anything that scales with the request (candidates per chip count, SRAM per sequence).
  check_request(cfg, hw, r);
  const int64_t parts = chip::n_parts(cfg);
  StageCache stages(cfg);
  if (r.tp > 0 && r.pp > 0 && r.replicas > 0) check_layout(cfg, r.n_chips, r.tp, r.pp, r.replicas);
  if (r.pp > 0 && r.moe_ffn_cuts == MoeFfnCuts::whole && r.pp > max_stages(cfg, MoeFfnCuts::whole))
    throw PlanError("pp=" + std::to_string(r.pp) + " exceeds the " + std::to_string(max_stages(cfg, MoeFfnCuts::whole)) +
                    " stages the model splits into with its MoE FFNs whole (--moe-ffn-cuts whole)");
  if (r.tp > 0 && r.pp > 0 && r.replicas > 0 && stages.kinds(r.pp, r).size() == 1) {
    // A layout the user fixed: its own errors are the answer. (Where its stages may split MoE FFNs two
    // ways, the search below picks the faster.)
    Plan plan = layout(cfg, hw, r, r.tp, r.pp, r.replicas, stages(r.pp, stages.kinds(r.pp, r).front()), r.replicas);
    check_fits(plan, minimum_chips(cfg, hw, r));
    check_heterogeneity(plan);
    return {plan, r.prompt_tokens, -1, nullptr};
  }
  if (r.tp > 0 || r.pp > 0) check_layout(cfg, r.n_chips, std::max<int64_t>(1, r.tp), std::max<int64_t>(1, r.pp), 1);

  // The request's objective: its whole latency (TTFT + (K - 1) x time per output token) when the prompt
  // is known and fits the context, else the time per output token, at the full context.
  const chip::ShardShape shape = shape_of(cfg, r, 1);
  const int64_t n_prompt = r.prompt_tokens, n_decode = std::max<int64_t>(0, r.output_tokens - 1);
  const bool whole_request = n_prompt > 0 && n_prompt + n_decode <= shape.context;
  constexpr int64_t unbounded = std::numeric_limits<int64_t>::max();
  auto times = [&](int64_t steps, int64_t cycles) { return cycles > unbounded / std::max<int64_t>(1, steps) ? unbounded : steps * cycles; };
  auto objective_of = [&](int64_t period_cycles, int64_t prefill_cycles) {
    if (!whole_request) return period_cycles;
    const int64_t decode = times(n_decode, period_cycles);
    return decode > unbounded - prefill_cycles ? unbounded : decode + prefill_cycles;
  };

  // Candidates: at most n_chips chips, whatever the request fixes, tp up to max_tp unless given, replicas
  // up to the batch (more would idle), and enough chips per replica for its weights and KV cache.
  const LayoutBound bound(cfg, hw, shape.context - 1);
  ChainBound chains(cfg, hw, r);
  const bool nominal = hw.uniform();
  // A search over the given widths: the best candidate, if any fits.
  bool some_layout_overflows = false, no_candidate = true;
  // A search's winner, its objective, its batch's prefill (-1 when the objective has none) and its decode
  // program (when the search built the plan's).
  struct Best {
    Candidate candidate;
    int64_t objective_cycles = 0;
    int64_t prefill_cycles = -1;
    std::shared_ptr<const Program> decode;
  };
  auto search = [&](const std::vector<int64_t>& tps) -> std::optional<Best> {
    std::vector<Candidate> candidates;
    for (const int64_t tp : tps)
      for (int64_t replicas = r.replicas > 0 ? r.replicas : 1;
           replicas <= (r.replicas > 0 ? r.replicas : std::min(r.batch, r.n_chips / tp)); ++replicas) {
        const int64_t n_slots = chip::ceil_div(r.batch, replicas);
        PlanRequest per_replica = r;
        per_replica.batch = n_slots;
        const int64_t fewest_chips = minimum_chips(cfg, hw, per_replica);
        const int64_t most_pp = std::min(parts, r.n_chips / (tp * replicas));
        for (int64_t pp = r.pp > 0 ? r.pp : std::max<int64_t>(1, chip::ceil_div(fewest_chips, tp)); pp <= (r.pp > 0 ? std::min(r.pp, most_pp) : most_pp); ++pp)
          for (const MoeFfnCuts moe : stages.kinds(pp, r)) {
            candidates.push_back({tp, pp, replicas, moe, nominal ? bound.period(tp, pp, n_slots) : 0,
                                  nominal && whole_request ? bound.prefill(tp, pp, n_slots, n_prompt, shape.block_tokens) : 0});
          }
      }
    for (Candidate& c : candidates) c.objective_bound_cycles = objective_of(c.period_bound_cycles, c.prefill_bound_cycles);

    // Each candidate is ruled out by the cheapest bound that suffices: the analytic one, then the chain
    // bound, then its exact decode period, then a bound on the prefill of its first replica, then that
    // prefill, before its whole prefill is modelled. What does not depend on the replica count is modelled
    // once per (tp, pp), for chips at nominal speed.
    std::map<std::tuple<int64_t, int64_t, MoeFfnCuts>, std::unique_ptr<Pipeline>> pipelines;
    const std::vector<Block> prompt_blocks = prefill_blocks(n_prompt, shape.block_tokens);
    const Candidate* best = nullptr;
    int64_t best_objective = unbounded, best_prefill = -1;
    std::shared_ptr<const Program> best_decode;
    auto loses = [&](int64_t objective, const Candidate& c) {
      return objective > best_objective || (best != nullptr && objective == best_objective && !c.before(*best));
    };
    // Candidates by their bound, lowest first (ties in the order of the tie rule), the analytic bound until
    // the chain bound replaces it: the first candidate modelled is then one whose chain bound is lowest,
    // and a candidate whose analytic bound already loses costs nothing more.
    struct Visit {
      int64_t bound_cycles = 0;
      bool chained = false;
      std::size_t candidate = 0;
    };
    auto later = [&](const Visit& a, const Visit& b) {
      if (a.bound_cycles != b.bound_cycles) return a.bound_cycles > b.bound_cycles;
      return candidates[b.candidate].before(candidates[a.candidate]);
    };
    std::vector<Visit> queue;
    for (std::size_t i = 0; i < candidates.size(); ++i) queue.push_back({candidates[i].objective_bound_cycles, !nominal, i});
    std::make_heap(queue.begin(), queue.end(), later);
    while (!queue.empty()) {
      std::pop_heap(queue.begin(), queue.end(), later);
      const Visit visit = queue.back();
      queue.pop_back();
      Candidate& c = candidates[visit.candidate];
      // Visited by bound: once even the bound loses, every later candidate loses too.
      if (visit.bound_cycles > best_objective) break;
      if (!visit.chained) {
        // The decode chain first (one token's collectives), then the prefill's (its blocks').
        const int64_t n_slots = chip::ceil_div(r.batch, c.replicas);
        // A period whose objective exceeds the next bound in the queue (or the best) leaves this candidate
        // behind it: the stages after need not be modelled until it comes up again.
        const int64_t limit = std::min(best_objective, queue.empty() ? unbounded : queue.front().bound_cycles);
        const int64_t enough = limit == unbounded ? unbounded
                               : !whole_request  ? limit
                               : n_decode == 0   ? unbounded
                                                 : (limit - std::min(limit, c.prefill_bound_cycles)) / n_decode;
        bool complete = true;
        const int64_t period = std::max(c.period_bound_cycles, chains.decode(c.tp, c.pp, c.replicas, stages(c.pp, c.moe), shape.context - 1,
                                                                             enough, complete).period_cycles(n_slots));
        int64_t chained = std::max(visit.bound_cycles, objective_of(period, c.prefill_bound_cycles));
        if (loses(chained, c)) continue;
        if (complete && whole_request) {
          c.prefill_bound_cycles = std::max(c.prefill_bound_cycles, chains.prefill(c.tp, c.pp, c.replicas, stages(c.pp, c.moe), prompt_blocks, n_slots));
          chained = std::max(chained, objective_of(period, c.prefill_bound_cycles));
          if (loses(chained, c)) continue;
        }
        queue.push_back({chained, complete, visit.candidate});
        std::push_heap(queue.begin(), queue.end(), later);
        continue;
      }
      Plan probe = layout(cfg, hw, r, c.tp, c.pp, c.replicas, stages(c.pp, c.moe), 1);
      if (probe.sram_bytes_max() > hw.sram_bytes) {
        some_layout_overflows = true;
        continue;
      }
      const int64_t n_slots = probe.shape.n_slots;
      int64_t period_cycles = 0;
      std::unique_ptr<Plan> full;
      Pipeline* pipeline = nullptr;
      // The pipeline's decode program is the plan's when the plan has one replica (the probe holds one
      // replica's chips); taken from the pipeline, it lives on only if the candidate wins.
      std::shared_ptr<const Program> decode;
      if (nominal) {
        // Replicas and slots change neither the decode program nor its timeline, only the period's terms.
        auto it = pipelines.find({c.tp, c.pp, c.moe});
        if (it == pipelines.end()) {
          it = pipelines.emplace(std::make_tuple(c.tp, c.pp, c.moe), std::make_unique<Pipeline>(std::move(probe), shape.context - 1)).first;
        }
        pipeline = it->second.get();
        period_cycles = pipeline->pace.period_cycles(n_slots);
        if (c.replicas == 1) decode = std::move(pipeline->decode);
        pipeline->decode.reset();
      } else {
        full = std::make_unique<Plan>(layout(cfg, hw, r, c.tp, c.pp, c.replicas, stages(c.pp, c.moe), c.replicas));
        check_heterogeneity(*full);
        period_cycles = decode_period_cycles(*full, shape.context - 1);
      }
      if (loses(objective_of(period_cycles, c.prefill_bound_cycles), c)) continue;
      if (!whole_request) {
        best_objective = period_cycles, best_decode = decode, best = &c;
        continue;
      }
      if (nominal) {
        // The first replica's prefill of its n_slots sequences: bounded (unless there is no best yet for the
        // bound to lose to), then modelled. It bounds the whole batch's prefill (a part of its ops).
        const bool bound_loses =
            best != nullptr &&
            loses(objective_of(period_cycles, pipeline->prefill_bound_cycles(prompt_blocks, n_slots)), c);
        const int64_t prefill = bound_loses ? -1 : pipeline->prefill_cycles(prompt_blocks, n_slots);
        const int64_t objective = bound_loses ? unbounded : objective_of(period_cycles, prefill);
        pipeline->release_programs();
        if (bound_loses) continue;
        if (c.replicas == 1) {
          // One replica: its first replica's prefill is the whole batch's.
          if (!loses(objective, c)) best_objective = objective, best_prefill = prefill, best_decode = decode, best = &c;
          continue;
        }
        if (loses(objective, c)) continue;
        full = std::make_unique<Plan>(layout(cfg, hw, r, c.tp, c.pp, c.replicas, stages(c.pp, c.moe), c.replicas));
      }
      const int64_t prefill = batch_prefill_cycles(*full, n_prompt);
      const int64_t objective = objective_of(period_cycles, prefill);
      if (!loses(objective, c)) best_objective = objective, best_prefill = prefill, best_decode = nullptr, best = &c;
    }
    no_candidate = no_candidate && candidates.empty();
    return best != nullptr ? std::optional<Best>(Best{*best, best_objective, best_prefill, best_decode}) : std::nullopt;
  };
  // Tensor parallelism within a node, or over whole nodes up to max_tp (every stage on nodes of its own);
  // any other width only when no such layout fits.
  const int64_t most_tp = std::min(r.n_chips, cfg.n_heads);
  const int64_t widest = r.max_tp > 0 ? r.max_tp : Topology::chips_per_node;
  std::vector<int64_t> widths, other_widths;
  for (int64_t tp = 1; tp <= most_tp; ++tp)
    (tp <= Topology::chips_per_node || (tp <= widest && tp % Topology::chips_per_node == 0) ? widths : other_widths).push_back(tp);
  // One search over every width: the chain bounds order the candidates, so the first ones modelled are
  // close to the best, and the others are ruled out by their bounds.
  std::optional<Best> best = search(r.tp > 0 ? std::vector<int64_t>{r.tp} : widths);
  if (!best && r.tp == 0 && !other_widths.empty()) best = search(other_widths);
  if (!best && (some_layout_overflows || no_candidate)) {
    if (r.tp > 0 && r.pp > 0) {
      // The user's tp x pp: say which chip overflows, with the most replicas the chips allow (the least KV).
      const int64_t replicas = std::max<int64_t>(1, std::min(r.batch, r.n_chips / (r.tp * r.pp)));
      check_fits(layout(cfg, hw, r, r.tp, r.pp, replicas, stages(r.pp), replicas), minimum_chips(cfg, hw, r));
    }
    throw_too_small(cfg, hw, r, stages);
  }
  LPURT_ASSERT(best.has_value());
  const Candidate& chosen = best->candidate;
  Plan plan = layout(cfg, hw, r, chosen.tp, chosen.pp, chosen.replicas, stages(chosen.pp, chosen.moe), chosen.replicas);
  check_heterogeneity(plan);
  return {plan, r.prompt_tokens, best->prefill_cycles, best->decode};
}

}  // namespace lpurt::partition
