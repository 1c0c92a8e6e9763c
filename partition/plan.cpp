#include "partition/plan.hpp"

#include "partition/timing.hpp"

#include <algorithm>
#include <limits>

namespace lpurt::partition {

namespace {

chip::ShardShape shape_of(const chip::ModelConfig& cfg, const PlanRequest& r) {
  chip::ShardShape s;
  s.context = r.context > 0 ? r.context : cfg.max_seq_len;
  s.n_slots = r.batch;
  s.block_tokens = std::max<int64_t>(1, std::min(r.block_tokens, s.context));
  return s;
}

Plan layout(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r, int64_t tp, int64_t pp) {
  Plan plan;
  plan.model = cfg;
  plan.hardware = hw;
  plan.tp = tp;
  plan.pp = pp;
  plan.shape = shape_of(cfg, r);
  for (int64_t s = 0; s <= pp; ++s) plan.stage_layer_begin.push_back(split_begin(cfg.n_layers, pp, s));
  for (int64_t s = 0; s < pp; ++s) {
    for (int64_t t = 0; t < tp; ++t) {
      ChipPlan c;
      c.chip = s * tp + t;
      c.stage = s;
      c.tp_rank = t;
      chip::ShardRange& g = c.range;
      g.layer_begin = plan.stage_layer_begin[static_cast<std::size_t>(s)];
      g.layer_end = plan.stage_layer_begin[static_cast<std::size_t>(s + 1)];
      g.head_begin = split_begin(cfg.n_heads, tp, t);
      g.head_end = split_begin(cfg.n_heads, tp, t + 1);
      g.ffn_begin = split_begin(cfg.intermediate_size, tp, t);
      g.ffn_end = split_begin(cfg.intermediate_size, tp, t + 1);
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

void check_layout(const chip::ModelConfig& cfg, int64_t n_chips, int64_t tp, int64_t pp) {
  if (tp < 1 || pp < 1) throw PlanError("tp and pp must be at least 1 (got tp=" + std::to_string(tp) + ", pp=" + std::to_string(pp) + ")");
  if (tp * pp != n_chips)
    throw PlanError("tp=" + std::to_string(tp) + " x pp=" + std::to_string(pp) + " = " + std::to_string(tp * pp) +
                    " chips, but --chips is " + std::to_string(n_chips));
  if (tp > chips_per_node)
    throw PlanError("tp=" + std::to_string(tp) + " exceeds the " + std::to_string(chips_per_node) +
                    " chips of a node (a tensor-parallel group must share a node's all-to-all links)");
  if (tp > cfg.n_heads)
    throw PlanError("tp=" + std::to_string(tp) + " exceeds the model's " + std::to_string(cfg.n_heads) +
                    " attention heads");
  if (pp > cfg.n_layers)
    throw PlanError("pp=" + std::to_string(pp) + " exceeds the model's " + std::to_string(cfg.n_layers) +
                    " layers (splitting inside a layer is not supported yet)");
}

void check_fits(const Plan& plan, int64_t minimum) {
  for (const auto& c : plan.chips) {
    if (c.sram.total_bytes() <= plan.hardware.sram_bytes) continue;
    // The bound counts weights and KV cache only; when it does not exceed this layout's chip count, the
    // honest advice is another layout, not a number of chips this one already has.
    const std::string advice = minimum > plan.n_chips()
                                   ? "; the model needs at least " + std::to_string(minimum) + " chips"
                                   : "; try another --tp/--pp layout or more chips";
    throw chip::CapacityError("chip " + std::to_string(c.chip) + " (stage " + std::to_string(c.stage) + ", tp rank " +
                              std::to_string(c.tp_rank) + ") does not fit in SRAM: " + c.sram.describe(plan.hardware) +
                              ", over by " + std::to_string(c.sram.total_bytes() - plan.hardware.sram_bytes) +
                              " bytes" + advice);
  }
}

}  // namespace

int64_t Plan::sram_bytes_max() const {
  int64_t m = 0;
  for (const auto& c : chips) m = std::max(m, c.sram.total_bytes());
  return m;
}

int64_t minimum_chips(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r) {
  const chip::ShardShape shape = shape_of(cfg, r);
  const int64_t kv_bytes =
      2 * cfg.n_layers * cfg.kv_size() * shape.context * shape.n_slots * hw.kv_bytes_per_value;
  const int64_t usable = hw.sram_bytes - hw.program_reserve_bytes;
  return chip::ceil_div(cfg.weight_bytes() + kv_bytes, usable);
}

Plan make_plan(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r) {
  cfg.validate();
  hw.validate();
  if (r.n_chips < 1) throw PlanError("--chips must be at least 1 (got " + std::to_string(r.n_chips) + ")");
  if (r.batch < 1) throw PlanError("--batch must be at least 1 (got " + std::to_string(r.batch) + ")");
  if (r.context < 0 || r.context > cfg.max_seq_len)
    throw PlanError("--context " + std::to_string(r.context) + " exceeds the model's max_seq_len " +
                    std::to_string(cfg.max_seq_len));
  int64_t minimum = minimum_chips(cfg, hw, r);
  if (r.tp > 0 || r.pp > 0) {
    const int64_t tp = r.tp > 0 ? r.tp : (r.n_chips % r.pp == 0 ? r.n_chips / r.pp : 0);
    const int64_t pp = r.pp > 0 ? r.pp : (tp > 0 && r.n_chips % tp == 0 ? r.n_chips / tp : 0);
    check_layout(cfg, r.n_chips, tp, pp);
    Plan plan = layout(cfg, hw, r, tp, pp);
    check_fits(plan, minimum);
    return plan;
  }
  // Every feasible (tp, pp) with tp * pp = n_chips; the lowest modelled decode step wins, ties to smaller tp.
  Plan best;
  int64_t best_cycles = std::numeric_limits<int64_t>::max();
  std::string layout_error;
  bool some_layout_overflows = false;
  for (int64_t tp = 1; tp <= std::min(r.n_chips, chips_per_node); ++tp) {
    if (r.n_chips % tp != 0) continue;
    const int64_t pp = r.n_chips / tp;
    try {
      check_layout(cfg, r.n_chips, tp, pp);
    } catch (const PlanError& e) {
      layout_error = e.what();
      continue;
    }
    Plan plan = layout(cfg, hw, r, tp, pp);
    if (plan.sram_bytes_max() > hw.sram_bytes) {
      some_layout_overflows = true;
      continue;
    }
    const int64_t cycles = decode_step_cycles(plan, plan.shape.context - 1);
    if (cycles < best_cycles) best_cycles = cycles, best = std::move(plan);
  }
  if (best.chips.empty() && some_layout_overflows) {
    // Every layout of n_chips was tried, so at least one more chip is needed whatever the bound says.
    minimum = std::max(minimum, r.n_chips + 1);
    throw chip::CapacityError("the model does not fit on " + std::to_string(r.n_chips) + " chip" +
                              (r.n_chips == 1 ? "" : "s") + ": it needs at least " + std::to_string(minimum) +
                              " chips (" + chip::format_bytes(static_cast<double>(cfg.weight_bytes())) +
                              " of weights plus the KV cache, " +
                              chip::format_bytes(static_cast<double>(hw.sram_bytes)) + " of SRAM per chip)");
  }
  if (best.chips.empty())
    throw PlanError("no feasible layout for " + std::to_string(r.n_chips) + " chips: " + layout_error);
  return best;
}

}  // namespace lpurt::partition
