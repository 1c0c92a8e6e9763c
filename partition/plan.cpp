#include "partition/plan.hpp"

#include "partition/request.hpp"
#include "partition/timing.hpp"

#include <algorithm>
#include <functional>
#include <limits>

namespace lpurt::partition {

namespace {

chip::ShardShape shape_of(const chip::ModelConfig& cfg, const PlanRequest& r, int64_t replicas) {
  chip::ShardShape s;
  s.context = r.context > 0 ? r.context : cfg.max_seq_len;
  s.n_slots = chip::ceil_div(r.batch, replicas);
  s.block_tokens = std::max<int64_t>(1, std::min(r.block_tokens, s.context));
  return s;
}

Plan layout(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r, int64_t tp, int64_t pp,
            int64_t replicas) {
  Plan plan;
  plan.model = cfg;
  plan.hardware = hw;
  plan.tp = tp;
  plan.pp = pp;
  plan.replicas = replicas;
  plan.batch = r.batch;
  plan.shape = shape_of(cfg, r, replicas);
  plan.stage_part_begin = balance_stages(cfg, pp);
  for (int64_t k = 0; k < replicas * pp; ++k) {
    const int64_t s = k % pp;
    for (int64_t t = 0; t < tp; ++t) {
      ChipPlan c;
      c.chip = k * tp + t;
      c.replica = k / pp;
      c.stage = s;
      c.tp_rank = t;
      chip::ShardRange& g = c.range;
      g.part_begin = plan.stage_part_begin[static_cast<std::size_t>(s)];
      g.part_end = plan.stage_part_begin[static_cast<std::size_t>(s + 1)];
      g.head_begin = split_begin(cfg.n_heads, tp, t);
      g.head_end = split_begin(cfg.n_heads, tp, t + 1);
      if (cfg.is_moe()) {
        // Expert parallelism: whole experts, split across the stage's chips.
        g.ffn_end = cfg.intermediate_size;
        g.expert_begin = split_begin(cfg.n_experts, tp, t);
        g.expert_end = split_begin(cfg.n_experts, tp, t + 1);
      } else {
        g.ffn_begin = split_begin(cfg.intermediate_size, tp, t);
        g.ffn_end = split_begin(cfg.intermediate_size, tp, t + 1);
      }
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
  if (tp * pp * replicas != n_chips)
    throw PlanError("tp=" + std::to_string(tp) + " x pp=" + std::to_string(pp) +
                    (replicas > 1 ? " x replicas=" + std::to_string(replicas) : std::string()) + " = " +
                    std::to_string(tp * pp * replicas) + " chips, but --chips is " + std::to_string(n_chips));
  if (tp > Topology::chips_per_node)
    throw PlanError("tp=" + std::to_string(tp) + " exceeds the " + std::to_string(Topology::chips_per_node) +
                    " chips of a node (tensor parallelism is limited to a node's all-to-all links)");
  if (tp > cfg.n_heads)
    throw PlanError("tp=" + std::to_string(tp) + " exceeds the model's " + std::to_string(cfg.n_heads) +
                    " attention heads");
  if (pp > 2 * cfg.n_layers)
    throw PlanError("pp=" + std::to_string(pp) + " exceeds the model's " + std::to_string(2 * cfg.n_layers) +
                    " layer parts (attention and FFN of " + std::to_string(cfg.n_layers) + " layers)");
}

/// Slow chips and links must exist: chips of the plan, links between neighbours of its topology.
void check_heterogeneity(const Plan& plan) {
  const chip::ChipSpec& hw = plan.hardware;
  for (const auto& [chip, factor] : hw.chip_speed_factors)
    if (chip >= plan.n_chips())
      throw PlanError("chip_speed_factor." + std::to_string(chip) + ": there are only " + std::to_string(plan.n_chips()) +
                      " chips (0.." + std::to_string(plan.n_chips() - 1) + ")");
  if (hw.link_bandwidth_factors.empty()) return;
  const Topology topology = topology_for(plan);
  for (const auto& [link, factor] : hw.link_bandwidth_factors) {
    const std::string name = "link_bandwidth_factor." + std::to_string(link.first) + "-" + std::to_string(link.second);
    if (link.second >= plan.n_chips())
      throw PlanError(name + ": there are only " + std::to_string(plan.n_chips()) + " chips");
    const int64_t hops = topology.hop_count(link.first, link.second);
    if (hops != 1)
      throw PlanError(name + ": chips " + std::to_string(link.first) + " and " + std::to_string(link.second) +
                      " are not linked directly in the " + hw.topology + " topology of " +
                      std::to_string(plan.n_chips()) + " chips (a route between them takes " + std::to_string(hops) +
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

std::vector<int64_t> balance_stages(const chip::ModelConfig& cfg, int64_t pp) {
  const int64_t n = 2 * cfg.n_layers;
  LPURT_ASSERT(pp >= 1 && pp <= n);
  int64_t attention = 0, ffn = 0;
  for (const auto& t : chip::layer_tensors(cfg, 0)) {
    const bool attention_part = t.kind == chip::TensorKind::attn_norm || t.kind == chip::TensorKind::wq ||
                                t.kind == chip::TensorKind::wk || t.kind == chip::TensorKind::wv ||
                                t.kind == chip::TensorKind::wo;
    (attention_part ? attention : ffn) += chip::tensor_bytes(cfg, t);
  }
  const int64_t head = chip::tensor_bytes(cfg, {chip::TensorKind::embedding});
  const int64_t tail = chip::tensor_bytes(cfg, {chip::TensorKind::lm_head}) + chip::tensor_bytes(cfg, {chip::TensorKind::final_norm});
  std::vector<int64_t> prefix(static_cast<std::size_t>(n + 1), 0);
  for (int64_t i = 0; i < n; ++i) prefix[static_cast<std::size_t>(i + 1)] = prefix[static_cast<std::size_t>(i)] + (i % 2 == 0 ? attention : ffn);
  auto cost = [&](int64_t s, int64_t i, int64_t j) {
    return prefix[static_cast<std::size_t>(j)] - prefix[static_cast<std::size_t>(i)] + (s == 0 ? head : 0) + (s == pp - 1 ? tail : 0);
  };
  // best[s][j]: smallest possible heaviest stage when stages 0..s hold parts [0, j); from[s][j]: its split.
  constexpr int64_t infinite = std::numeric_limits<int64_t>::max();
  std::vector<std::vector<int64_t>> best(static_cast<std::size_t>(pp), std::vector<int64_t>(static_cast<std::size_t>(n + 1), infinite));
  std::vector<std::vector<int64_t>> from(best.size(), std::vector<int64_t>(static_cast<std::size_t>(n + 1), 0));
  for (int64_t j = 1; j <= n - (pp - 1); ++j) best[0][static_cast<std::size_t>(j)] = cost(0, 0, j);
  for (int64_t s = 1; s < pp; ++s)
    for (int64_t j = s + 1; j <= n - (pp - 1 - s); ++j)
      for (int64_t i = s; i < j; ++i) {
        const int64_t prev = best[static_cast<std::size_t>(s - 1)][static_cast<std::size_t>(i)];
        if (prev == infinite) continue;
        const int64_t m = std::max(prev, cost(s, i, j));
        if (m < best[static_cast<std::size_t>(s)][static_cast<std::size_t>(j)])
          best[static_cast<std::size_t>(s)][static_cast<std::size_t>(j)] = m, from[static_cast<std::size_t>(s)][static_cast<std::size_t>(j)] = i;
      }
  std::vector<int64_t> begin(static_cast<std::size_t>(pp + 1), 0);
  begin[static_cast<std::size_t>(pp)] = n;
  for (int64_t s = pp - 1; s > 0; --s)
    begin[static_cast<std::size_t>(s)] = from[static_cast<std::size_t>(s)][static_cast<std::size_t>(begin[static_cast<std::size_t>(s + 1)])];
  return begin;
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

int64_t Plan::max_batch() const {
  auto fits = [&](int64_t slots) {
    chip::ShardShape s = shape;
    s.n_slots = slots;
    for (const auto& c : chips)
      if (chip::shard_sram_usage(model, c.range, s, hardware).total_bytes() > hardware.sram_bytes) return false;
    return true;
  };
  return replicas * largest_fitting(int64_t{1} << 20, fits);
}

int64_t Plan::max_context() const {
  auto fits = [&](int64_t context) {
    chip::ShardShape s = shape;
    s.context = context;
    for (const auto& c : chips)
      if (chip::shard_sram_usage(model, c.range, s, hardware).total_bytes() > hardware.sram_bytes) return false;
    return true;
  };
  return largest_fitting(model.max_seq_len, fits);
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
      2 * cfg.n_layers * cfg.kv_size() * shape.context * shape.n_slots * hw.kv_bytes_per_value;
  const int64_t usable = hw.sram_bytes - hw.program_reserve_bytes;
  return chip::ceil_div(cfg.weight_bytes() + kv_bytes, usable);
}

Plan make_plan(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r) {
  cfg.validate();
  hw.validate();
  // Before anything that scales with the request (candidates per chip count, SRAM per sequence).
  check_request(cfg, hw, r);
  int64_t minimum = minimum_chips(cfg, hw, r);
  // Candidate layouts: tp x pp x replicas = n_chips, honouring whatever the request fixes.
  struct Candidate {
    int64_t tp, pp, replicas;
  };
  std::vector<Candidate> candidates;
  if (r.tp > 0 && r.pp > 0) {
    candidates.push_back({r.tp, r.pp, r.replicas > 0 ? r.replicas : (r.n_chips % (r.tp * r.pp) == 0 ? r.n_chips / (r.tp * r.pp) : 1)});
  } else {
    for (int64_t tp = r.tp > 0 ? r.tp : 1; tp <= (r.tp > 0 ? r.tp : std::min(r.n_chips, Topology::chips_per_node)); ++tp)
      for (int64_t replicas = r.replicas > 0 ? r.replicas : 1; replicas <= (r.replicas > 0 ? r.replicas : r.n_chips); ++replicas) {
        if (r.n_chips % (tp * replicas) != 0) continue;
        const int64_t pp = r.n_chips / (tp * replicas);
        if (r.pp > 0 && pp != r.pp) continue;
        candidates.push_back({tp, pp, replicas});
      }
  }
  if (r.tp > 0 && r.pp > 0) {
    // A layout the user fixed: its own errors are the answer.
    const Candidate c = candidates.front();
    check_layout(cfg, r.n_chips, c.tp, c.pp, c.replicas);
    Plan plan = layout(cfg, hw, r, c.tp, c.pp, c.replicas);
    check_fits(plan, minimum);
    check_heterogeneity(plan);
    return plan;
  }
  // Every feasible candidate with its time per output token at the full context.
  struct Feasible {
    Plan plan;
    int64_t period_cycles;
  };
  std::vector<Feasible> feasible;
  std::string layout_error = "tp must be 1 .. " + std::to_string(Topology::chips_per_node);
  bool some_layout_overflows = false;
  for (const Candidate& c : candidates) {
    try {
      check_layout(cfg, r.n_chips, c.tp, c.pp, c.replicas);
    } catch (const PlanError& e) {
      layout_error = e.what();
      continue;
    }
    Plan plan = layout(cfg, hw, r, c.tp, c.pp, c.replicas);
    if (plan.sram_bytes_max() > hw.sram_bytes) {
      some_layout_overflows = true;
      continue;
    }
    check_heterogeneity(plan);
    const int64_t period_cycles = decode_period_cycles(plan, plan.shape.context - 1);
    feasible.push_back({std::move(plan), period_cycles});
  }
  // Lowest time per output token first; ties to the earlier candidate (smaller tp, then fewer replicas).
  std::stable_sort(feasible.begin(), feasible.end(),
                   [](const Feasible& a, const Feasible& b) { return a.period_cycles < b.period_cycles; });
  std::size_t best = 0;
  const int64_t n_prompt = r.prompt_tokens, n_decode = std::max<int64_t>(0, r.output_tokens - 1);
  if (n_prompt > 0 && feasible.size() > 1 && n_prompt + n_decode <= feasible.front().plan.shape.context) {
    // The whole request's latency. Its decode part alone grows along the sorted list, so once that
    // reaches the best latency found, no later candidate can win: most prefills are never modelled.
    int64_t best_latency_cycles = std::numeric_limits<int64_t>::max();
    for (std::size_t i = 0; i < feasible.size(); ++i) {
      const int64_t decode_cycles = n_decode * feasible[i].period_cycles;
      if (decode_cycles >= best_latency_cycles) break;
      const Plan& plan = feasible[i].plan;
      const Program prefill = build_program(plan, topology_for(plan), batch_prefill_blocks(plan, n_prompt));
      const int64_t latency_cycles = compute_timeline(prefill, plan, 0).makespan_cycles + decode_cycles;
      if (latency_cycles < best_latency_cycles) best_latency_cycles = latency_cycles, best = i;
    }
  }
  if (feasible.empty() && some_layout_overflows) {
    // Every layout of n_chips overflows: name the smallest single-pipeline layout that fits (the SRAM
    // bound is only a lower limit, since parts do not divide evenly), searched upward from the bound.
    int64_t smallest = std::numeric_limits<int64_t>::max(), smallest_tp = 0;
    const int64_t max_tp = std::min<int64_t>(Topology::chips_per_node, cfg.n_heads);
    for (int64_t tp = r.tp > 0 ? r.tp : 1; tp <= (r.tp > 0 ? r.tp : max_tp); ++tp) {
      for (int64_t pp = r.pp > 0 ? r.pp : std::max<int64_t>(1, chip::ceil_div(minimum, tp));
           pp <= (r.pp > 0 ? r.pp : 2 * cfg.n_layers) && tp * pp < smallest; ++pp) {
        if (layout(cfg, hw, r, tp, pp, 1).sram_bytes_max() > hw.sram_bytes) continue;
        smallest = tp * pp, smallest_tp = tp;
        break;
      }
    }
    const std::string sizes = chip::format_bytes(static_cast<double>(cfg.weight_bytes())) +
                              " of weights plus the KV cache fill " + std::to_string(minimum) + " chips of " +
                              chip::format_bytes(static_cast<double>(hw.sram_bytes)) + " SRAM";
    const std::string head = "the model does not fit on " + std::to_string(r.n_chips) + " chip" + (r.n_chips == 1 ? "" : "s");
    if (smallest_tp == 0)
      throw chip::CapacityError(head + ": no tp x pp layout fits at all, it needs at least " +
                                std::to_string(std::max(minimum, r.n_chips + 1)) + " chips and more SRAM per part (" +
                                sizes + ")");
    throw chip::CapacityError(head + ": it needs at least " + std::to_string(smallest) + " chips (the smallest layout "
                              "that fits is tp " + std::to_string(smallest_tp) + " x pp " +
                              std::to_string(smallest / smallest_tp) + "; " + sizes + ")");
  }
  if (feasible.empty())
    throw PlanError("no feasible layout for " + std::to_string(r.n_chips) + " chips: " + layout_error);
  return std::move(feasible[best].plan);
}

}  // namespace lpurt::partition
