#include "partition/timing.hpp"

#include <algorithm>
#include <limits>
#include <tuple>
#include <unordered_map>
#include <utility>

namespace lpurt::partition {

Topology topology_for(const Plan& plan) {
  return Topology(parse_topology(plan.hardware.topology), plan.system_chips);
}

std::vector<Block> prefill_blocks(int64_t prompt_tokens, int64_t block_tokens, int64_t replica) {
  std::vector<Block> blocks;
  for (int64_t first = 0; first < prompt_tokens; first += block_tokens) {
    const int64_t n = std::min(block_tokens, prompt_tokens - first);
    blocks.push_back({first, n, first + n == prompt_tokens, replica});
  }
  return blocks;
}

std::vector<Block> batch_prefill_blocks(const Plan& plan, int64_t prompt_tokens) {
  std::vector<Block> blocks;
  for (int64_t b = 0; b < plan.batch; ++b) {
    const auto one = prefill_blocks(prompt_tokens, plan.shape.block_tokens, plan.replica_of(b));
    blocks.insert(blocks.end(), one.begin(), one.end());
  }
  return blocks;
}

std::vector<Block> decode_blocks(int64_t replica) { return {{0, 1, true, replica}}; }

namespace {

struct CriticalPath {
  int64_t compute_cycles = 0;
  int64_t transfer_cycles = 0;
};

CriticalPath critical_path(const Program& p, const Timeline& t) {
  // Back from the op that ends last along what each op waited for; every op starts exactly when the op
  // it waited for ends, so the path covers the makespan without gaps.
  CriticalPath path;
  int32_t last = -1;
  for (std::size_t i = 0; i < p.ops.size(); ++i)
    if (last < 0 || t.end_cycles(i) > t.end_cycles(static_cast<std::size_t>(last))) last = static_cast<int32_t>(i);
  for (int32_t i = last; i >= 0; i = t.waited_for[static_cast<std::size_t>(i)]) {
    const auto op = static_cast<std::size_t>(i);
    (p.ops[op].kind == OpKind::send ? path.transfer_cycles : path.compute_cycles) += t.duration_cycles[op];
  }
  LPURT_ASSERT(path.compute_cycles + path.transfer_cycles == t.makespan_cycles);
  return path;
}

/// What the modelled figures read of one decode step's timeline, and the op that decided each value.
///
/// A decode step's timeline depends on the position only through its attention ops' durations. When
/// they are all equal (one value x: the layout splits heads evenly and no chip is slowed), every op's
/// start is the end of the predecessor it waited for, so with the same decisions (every op's
/// waited-for op, the op that ends last, each stage's first and last compute op) every value is
/// affine in x: a + k x, k the attention ops on its path. Between two positions whose decisions agree
/// the decisions agree too (each winner's margin over the others is affine in x and non-negative at
/// both ends), and x does not decrease with the position: the steps between are then interpolated
/// exactly, without a timeline.
struct DecodeStep {
  int64_t attention_cycles = 0;  ///< x
  std::vector<int32_t> waited_for;
  int32_t last_op = -1;
  std::vector<int32_t> stage_first_op, stage_last_op;  ///< [pp] compute ops
  int64_t makespan_cycles = 0;
  std::vector<int64_t> stage_first_cycles, stage_last_cycles;  ///< [pp] first start, last end
  int64_t critical_transfer_cycles = 0;

  bool same_decisions(const DecodeStep& o) const {
    return last_op == o.last_op && stage_first_op == o.stage_first_op && stage_last_op == o.stage_last_op &&
           waited_for == o.waited_for;
  }
};

/// The values the pace reads, and the ops that set them: the makespan, each stage's first start and last end.
DecodeStep measure(const Plan& plan, const Program& p, const Timeline& t) {
  DecodeStep d;
  d.makespan_cycles = t.makespan_cycles;
  const auto pp = static_cast<std::size_t>(plan.pp);
  d.stage_first_op.assign(pp, -1);
  d.stage_last_op.assign(pp, -1);
  d.stage_first_cycles.assign(pp, std::numeric_limits<int64_t>::max());
  d.stage_last_cycles.assign(pp, 0);
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    if (d.last_op < 0 || t.end_cycles(i) > t.end_cycles(static_cast<std::size_t>(d.last_op))) d.last_op = static_cast<int32_t>(i);
    const Op& op = p.ops[i];
    if (op.kind == OpKind::send || op.kind == OpKind::recv) continue;
    const auto s = static_cast<std::size_t>(plan.chips[static_cast<std::size_t>(op.chip)].stage);
    if (t.start_cycles[i] < d.stage_first_cycles[s]) d.stage_first_cycles[s] = t.start_cycles[i], d.stage_first_op[s] = static_cast<int32_t>(i);
    if (t.end_cycles(i) > d.stage_last_cycles[s]) d.stage_last_cycles[s] = t.end_cycles(i), d.stage_last_op[s] = static_cast<int32_t>(i);
  }
  return d;
}

/// measure() and the critical path's transfers, at attention duration x.
DecodeStep summarize(const Plan& plan, const Program& p, const Timeline& t, int64_t attention_cycles) {
  DecodeStep d = measure(plan, p, t);
  d.attention_cycles = attention_cycles;
  d.critical_transfer_cycles = critical_path(p, t).transfer_cycles;
  return d;
}

/// What a decode step adds to the modelled figures.
struct StepFigures {
  int64_t period_cycles = 0;
  int64_t critical_compute_cycles = 0;
  int64_t critical_transfer_cycles = 0;
};

DecodePace pace_of(const DecodeStep& d) {
  DecodePace pace;
  pace.latency_cycles = d.makespan_cycles;
  for (std::size_t s = 0; s < d.stage_first_cycles.size(); ++s)
    pace.busiest_stage_cycles = std::max(pace.busiest_stage_cycles, d.stage_last_cycles[s] - d.stage_first_cycles[s]);
  return pace;
}

/// decode_period_cycles and the critical path's split, from a summary.
StepFigures figures_of(const Plan& plan, const DecodeStep& d) {
  return {pace_of(d).period_cycles(plan.shape.n_slots), d.makespan_cycles - d.critical_transfer_cycles,
          d.critical_transfer_cycles};
}

/// The values at attention duration x of a step between a and b, which decided alike.
DecodeStep interpolate(const DecodeStep& a, const DecodeStep& b, int64_t x) {
  const int64_t dx = b.attention_cycles - a.attention_cycles;
  auto at = [&](int64_t va, int64_t vb) {
    if (dx == 0) return va;
    LPURT_ASSERT((vb - va) % dx == 0);  // a value is a + k x, k attention ops on its path
    return va + (vb - va) / dx * (x - a.attention_cycles);
  };
  DecodeStep d;
  d.attention_cycles = x;
  d.makespan_cycles = at(a.makespan_cycles, b.makespan_cycles);
  d.critical_transfer_cycles = a.critical_transfer_cycles;
  d.stage_first_cycles.resize(a.stage_first_cycles.size());
  d.stage_last_cycles.resize(a.stage_last_cycles.size());
  for (std::size_t s = 0; s < a.stage_first_cycles.size(); ++s) {
    d.stage_first_cycles[s] = at(a.stage_first_cycles[s], b.stage_first_cycles[s]);
    d.stage_last_cycles[s] = at(a.stage_last_cycles[s], b.stage_last_cycles[s]);
  }
  return d;
}

/// The attention op whose duration every attention op of `p` shares at every position, or -1 if their
/// chips differ in heads, KV heads or speed.
int32_t shared_attention_op(const Plan& plan, const Program& p) {
  int32_t first = -1;
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    const Op& op = p.ops[i];
    if (op.kind != OpKind::attention) continue;
    if (first < 0) {
      first = static_cast<int32_t>(i);
      continue;
    }
    const int64_t a = op.chip, b = p.ops[static_cast<std::size_t>(first)].chip;
    const chip::ShardRange& ra = plan.chips[static_cast<std::size_t>(a)].range;
    const chip::ShardRange& rb = plan.chips[static_cast<std::size_t>(b)].range;
    if (ra.n_heads() != rb.n_heads() || ra.n_kv_heads(plan.model) != rb.n_kv_heads(plan.model) ||
        plan.hardware.chip_speed(plan.network_chip(a)) != plan.hardware.chip_speed(plan.network_chip(b)))
      return -1;
  }
  return first;
}

/// The attention ops of a program in classes whose durations agree at every position (the same heads, KV
/// heads and chip speed): [ops] each op's class (-1: not an attention op), and one op of each class.
struct AttentionClasses {
  std::vector<int32_t> of_op;
  std::vector<int32_t> representative;
};

AttentionClasses attention_classes(const Plan& plan, const Program& p) {
  AttentionClasses classes;
  classes.of_op.assign(p.ops.size(), -1);
  std::vector<std::tuple<int64_t, int64_t, double>> keys;
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    const Op& op = p.ops[i];
    if (op.kind != OpKind::attention) continue;
    const chip::ShardRange& r = plan.chips[static_cast<std::size_t>(op.chip)].range;
    const auto key = std::make_tuple(r.n_heads(), r.n_kv_heads(plan.model), plan.hardware.chip_speed(plan.network_chip(op.chip)));
    const auto found = std::find(keys.begin(), keys.end(), key);
    classes.of_op[i] = static_cast<int32_t>(found - keys.begin());
    if (found == keys.end()) keys.push_back(key), classes.representative.push_back(static_cast<int32_t>(i));
  }
  return classes;
}

/// A solved step's decisions as affine forms in the attention classes' durations x (DecodeStep, with one
/// x per class): every op's end is a + k . x, k its chain's attention ops of each class. The decisions
/// hold wherever every winner's margin over its rivals (each an affine form) keeps its sign, which
/// holds() checks at the corner of a box of x where the margin is smallest: the steps whose x lie in the
/// box then take their values from the forms, exactly, without a timeline.
class StepForms {
 public:
  /// `preds`: each op's predecessors in the solver's order (data dependencies, then the previous user of
  /// its unit or of each link of its route), [ops + 1] offsets into the flat list; `stage_of_compute`:
  /// [ops] a compute op's stage, -1 for a transfer; `t` and `d`: the step solved at durations x.
  StepForms(const Program& p, const std::vector<int32_t>& pred_begin, const std::vector<int32_t>& preds,
            const std::vector<int64_t>& stage_of_compute, const AttentionClasses& classes, const Timeline& t,
            const std::vector<int64_t>& x, const DecodeStep& d)
      : p_(p), pred_begin_(pred_begin), preds_(preds), stage_of_compute_(stage_of_compute), classes_(classes), step_(d),
        n_(classes.representative.size()) {
    const std::size_t n_ops = p.ops.size();
    a_.resize(n_ops);
    k_.assign(n_ops * n_, 0);
    for (std::size_t i = 0; i < n_ops; ++i) {
      const int32_t w = d.waited_for[i];
      if (w >= 0) std::copy_n(&k_[static_cast<std::size_t>(w) * n_], n_, &k_[i * n_]);
      if (classes.of_op[i] >= 0) ++k_[i * n_ + static_cast<std::size_t>(classes.of_op[i])];
      a_[i] = t.end_cycles(i) - dot(i, x);
    }
    duration_.resize(n_ops);
    for (std::size_t i = 0; i < n_ops; ++i) duration_[i] = classes.of_op[i] >= 0 ? 0 : t.duration_cycles[i];
  }

  /// Whether the decisions hold for every x with lo <= x <= hi.
  bool holds(const std::vector<int64_t>& lo, const std::vector<int64_t>& hi) const {
    // The smallest over the box of end(i) - end(j) (start(i) - start(j) when `starts`).
    auto least = [&](std::size_t i, std::size_t j, bool starts) {
      int64_t m = a_[i] - a_[j] - (starts ? duration_[i] - duration_[j] : 0);
      for (std::size_t c = 0; c < n_; ++c) {
        int64_t dk = k_[i * n_ + c] - k_[j * n_ + c];
        if (starts) dk -= (classes_.of_op[i] == static_cast<int32_t>(c)) - (classes_.of_op[j] == static_cast<int32_t>(c));
        m += std::min(dk * lo[c], dk * hi[c]);
      }
      return m;
    };
    auto least_end = [&](std::size_t i) {
      int64_t m = a_[i];
      for (std::size_t c = 0; c < n_; ++c) m += std::min(k_[i * n_ + c] * lo[c], k_[i * n_ + c] * hi[c]);
      return m;
    };
    auto most_end = [&](std::size_t i) {
      int64_t m = a_[i];
      for (std::size_t c = 0; c < n_; ++c) m += std::max(k_[i * n_ + c] * lo[c], k_[i * n_ + c] * hi[c]);
      return m;
    };
    // Each op waits for its first predecessor to end latest (and later than cycle 0), as the solver picks.
    for (std::size_t i = 0; i < p_.ops.size(); ++i) {
      const int32_t w = step_.waited_for[i];
      bool before = true;
      for (int32_t e = pred_begin_[i]; e < pred_begin_[i + 1]; ++e) {
        const auto q = static_cast<std::size_t>(preds_[static_cast<std::size_t>(e)]);
        if (w < 0) {
          if (most_end(q) > 0) return false;
          continue;
        }
        if (q == static_cast<std::size_t>(w)) {
          before = false;
          continue;
        }
        const int64_t margin = least(static_cast<std::size_t>(w), q, false);
        if (before ? margin <= 0 : margin < 0) return false;
      }
      if (w >= 0 && least_end(static_cast<std::size_t>(w)) <= 0) return false;
    }
    // measure()'s choices: the first op to end last, each stage's first to start first and first to end last.
    const auto last = static_cast<std::size_t>(step_.last_op);
    for (std::size_t j = 0; j < p_.ops.size(); ++j) {
      if (j == last) continue;
      const int64_t margin = least(last, j, false);
      if (j < last ? margin <= 0 : margin < 0) return false;
    }
    for (const int32_t latest : step_.stage_last_op)
      if (least_end(static_cast<std::size_t>(latest)) <= 0) return false;
    for (std::size_t j = 0; j < p_.ops.size(); ++j) {
      const int64_t s = stage_of_compute_[j];
      if (s < 0) continue;
      const auto first = static_cast<std::size_t>(step_.stage_first_op[static_cast<std::size_t>(s)]);
      const auto latest = static_cast<std::size_t>(step_.stage_last_op[static_cast<std::size_t>(s)]);
      if (j != first) {
        const int64_t margin = least(j, first, true);  // start(j) - start(first)
        if (j < first ? margin <= 0 : margin < 0) return false;
      }
      if (j != latest) {
        const int64_t margin = least(latest, j, false);
        if (j < latest ? margin <= 0 : margin < 0) return false;
      }
    }
    return true;
  }

  /// The step's values at x (attention_cycles 0; waited_for not kept).
  DecodeStep at(const std::vector<int64_t>& x) const {
    DecodeStep d;
    d.last_op = step_.last_op, d.stage_first_op = step_.stage_first_op, d.stage_last_op = step_.stage_last_op;
    d.makespan_cycles = end(static_cast<std::size_t>(step_.last_op), x);
    d.critical_transfer_cycles = step_.critical_transfer_cycles;
    for (std::size_t s = 0; s < step_.stage_first_op.size(); ++s) {
      const auto first = static_cast<std::size_t>(step_.stage_first_op[s]);
      const int32_t c = classes_.of_op[first];
      d.stage_first_cycles.push_back(end(first, x) - (c >= 0 ? x[static_cast<std::size_t>(c)] : duration_[first]));
      d.stage_last_cycles.push_back(end(static_cast<std::size_t>(step_.stage_last_op[s]), x));
    }
    return d;
  }

  /// Whether the forms give the solved step's own values (the makespan is the last op's end).
  bool reproduces(const std::vector<int64_t>& x) const {
    const DecodeStep d = at(x);
    return d.makespan_cycles == step_.makespan_cycles && d.stage_first_cycles == step_.stage_first_cycles &&
           d.stage_last_cycles == step_.stage_last_cycles;
  }

 private:
  int64_t dot(std::size_t i, const std::vector<int64_t>& x) const {
    int64_t v = 0;
    for (std::size_t c = 0; c < n_; ++c) v += k_[i * n_ + c] * x[c];
    return v;
  }
  int64_t end(std::size_t i, const std::vector<int64_t>& x) const { return a_[i] + dot(i, x); }

  const Program& p_;
  const std::vector<int32_t>& pred_begin_;
  const std::vector<int32_t>& preds_;
  const std::vector<int64_t>& stage_of_compute_;
  const AttentionClasses& classes_;
  DecodeStep step_;
  std::size_t n_;
  std::vector<int64_t> a_;         ///< [ops]
  std::vector<int64_t> k_;         ///< [ops x classes]
  std::vector<int64_t> duration_;  ///< [ops] fixed durations (0 for attention ops)
};

/// Each op's predecessors in TimelineSolver's order: its dependencies, then the previous user of each link
/// of its route (a send) or of its unit (a compute op). Returns [ops + 1] offsets and the flat list.
std::pair<std::vector<int32_t>, std::vector<int32_t>> solver_predecessors(const Program& p) {
  std::vector<int32_t> begin, preds;
  begin.reserve(p.ops.size() + 1);
  preds.reserve(p.deps.size() + p.ops.size() + p.hops.size());
  std::vector<int32_t> unit_last(static_cast<std::size_t>(2 * p.n_chips), -1);
  std::unordered_map<int64_t, int32_t> link_last;
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    const Op& op = p.ops[i];
    begin.push_back(static_cast<int32_t>(preds.size()));
    preds.insert(preds.end(), p.deps.begin() + op.dep_begin, p.deps.begin() + op.dep_begin + op.dep_count);
    if (op.kind == OpKind::recv) continue;
    if (op.kind == OpKind::send) {
      for (int32_t h = 0; h < op.hop_count; ++h) {
        const auto [it, first_use] = link_last.try_emplace(p.link_key(p.hops[static_cast<std::size_t>(op.hop_begin + h)]), static_cast<int32_t>(i));
        if (!first_use) preds.push_back(std::exchange(it->second, static_cast<int32_t>(i)));
      }
      continue;
    }
    int32_t& last = unit_last[static_cast<std::size_t>(2 * op.chip + (op.unit == Unit::mxm ? 0 : 1))];
    if (last >= 0) preds.push_back(last);
    last = static_cast<int32_t>(i);
  }
  begin.push_back(static_cast<int32_t>(preds.size()));
  return {std::move(begin), std::move(preds)};
}

/// for_each_position when the attention ops' durations differ (values.attention_cycles is then 0): the
/// timeline is solved where StepForms cannot vouch for the steps between two solved ones, each range
/// checked against the box of its classes' durations.
void for_each_position_by_class(const Plan& plan, const Program& program, TimelineSolver& solver, int64_t first, int64_t n,
                                const std::function<void(int64_t, const DecodeStep&)>& use) {
  const AttentionClasses classes = attention_classes(plan, program);
  if (classes.representative.empty() || n < 3) {
    for (int64_t i = 0; i < n; ++i) use(i, summarize(plan, program, solver.at(first + i), 0));
    return;
  }
  const std::size_t n_classes = classes.representative.size();
  std::vector<std::vector<int64_t>> xs(static_cast<std::size_t>(n), std::vector<int64_t>(n_classes));
  for (int64_t i = 0; i < n; ++i)
    for (std::size_t c = 0; c < n_classes; ++c)
      xs[static_cast<std::size_t>(i)][c] =
          compute_op_cycles(program, program.ops[static_cast<std::size_t>(classes.representative[c])], plan, first + i);
  const std::pair<std::vector<int32_t>, std::vector<int32_t>> predecessors = solver_predecessors(program);
  std::vector<int64_t> stage_of_compute(program.ops.size(), -1);
  for (std::size_t i = 0; i < program.ops.size(); ++i) {
    const Op& op = program.ops[i];
    if (op.kind != OpKind::send && op.kind != OpKind::recv) stage_of_compute[i] = plan.chips[static_cast<std::size_t>(op.chip)].stage;
  }
  // A solved step: its values, and its forms (null when they do not reproduce it: no interpolation from it).
  auto solve = [&](int64_t i) {
    const Timeline& t = solver.at(first + i);
    DecodeStep d = summarize(plan, program, t, 0);
    d.waited_for = t.waited_for;
    auto forms = std::make_unique<StepForms>(program, predecessors.first, predecessors.second, stage_of_compute, classes, t,
                                             xs[static_cast<std::size_t>(i)], d);
    if (!forms->reproduces(xs[static_cast<std::size_t>(i)])) forms.reset();
    d.waited_for.clear();
    return std::make_pair(d, std::move(forms));
  };
  // Steps lo and hi are solved and used; use the ones between in order, halving where lo's decisions may
  // not hold over the range.
  std::function<void(int64_t, const StepForms*, int64_t)> fill = [&](int64_t lo, const StepForms* forms, int64_t hi) {
    if (hi - lo < 2) return;
    if (forms != nullptr) {
      // Every class's shortest and longest duration over the steps to fill.
      std::vector<int64_t> box_lo = xs[static_cast<std::size_t>(lo + 1)], box_hi = box_lo;
      for (int64_t i = lo + 2; i < hi; ++i)
        for (std::size_t c = 0; c < n_classes; ++c) {
          box_lo[c] = std::min(box_lo[c], xs[static_cast<std::size_t>(i)][c]);
          box_hi[c] = std::max(box_hi[c], xs[static_cast<std::size_t>(i)][c]);
        }
      if (forms->holds(box_lo, box_hi)) {
        for (int64_t i = lo + 1; i < hi; ++i) use(i, forms->at(xs[static_cast<std::size_t>(i)]));
        return;
      }
    }
    const int64_t mid = lo + (hi - lo) / 2;
    auto [m, mid_forms] = solve(mid);
    fill(lo, forms, mid);
    use(mid, m);
    fill(mid, mid_forms.get(), hi);
  };
  auto [a, a_forms] = solve(0);
  use(0, a);
  const DecodeStep b = solve(n - 1).first;
  fill(0, a_forms.get(), n - 1);
  use(n - 1, b);
}

/// Calls use(i, values) for the one-block program at base positions [first, first + n), in order, with the
/// program's timeline solved only where the decisions change (see DecodeStep; when the attention ops differ,
/// for_each_position_by_class).
void for_each_position(const Plan& plan, const Program& program, TimelineSolver& solver, int64_t first, int64_t n,
                       const std::function<void(int64_t, const DecodeStep&)>& use) {
  const int32_t attention = shared_attention_op(plan, program);
  if (attention < 0) {
    for_each_position_by_class(plan, program, solver, first, n, use);
    return;
  }
  auto x_at = [&](int64_t position) {
    return compute_op_cycles(program, program.ops[static_cast<std::size_t>(attention)], plan, position);
  };
  // A solved step keeps every op's decision, which the interpolation compares.
  auto solve = [&](int64_t i) {
    const Timeline& t = solver.at(first + i);
    DecodeStep d = summarize(plan, program, t, x_at(first + i));
    d.waited_for = t.waited_for;
    return d;
  };
  // Steps lo and hi are solved and used; use the ones between in order, halving where the decisions differ.
  std::function<void(int64_t, const DecodeStep&, int64_t, const DecodeStep&)> fill =
      [&](int64_t lo, const DecodeStep& a, int64_t hi, const DecodeStep& b) {
        if (hi - lo < 2) return;
        if (a.same_decisions(b)) {
          for (int64_t i = lo + 1; i < hi; ++i) use(i, interpolate(a, b, x_at(first + i)));
          return;
        }
        const int64_t mid = lo + (hi - lo) / 2;
        const DecodeStep m = solve(mid);
        fill(lo, a, mid, m);
        use(mid, m);
        fill(mid, m, hi, b);
      };
  const DecodeStep a = solve(0);
  use(0, a);
  if (n == 1) return;
  const DecodeStep b = solve(n - 1);
  fill(0, a, n - 1, b);
  use(n - 1, b);
}

/// Figures of the decode steps at positions [first, first + n).
std::vector<StepFigures> decode_step_figures(const Plan& plan, const Program& decode, TimelineSolver& solver,
                                             int64_t first, int64_t n) {
  std::vector<StepFigures> figures(static_cast<std::size_t>(n));
  for_each_position(plan, decode, solver, first, n,
                    [&](int64_t i, const DecodeStep& d) { figures[static_cast<std::size_t>(i)] = figures_of(plan, d); });
  return figures;
}

}  // namespace

DecodePace decode_pace(const Plan& plan, const Program& decode, const Timeline& timeline) {
  return pace_of(measure(plan, decode, timeline));
}

std::vector<BlockCost> block_costs(const Plan& plan, const Program& program, int64_t first_position, int64_t n,
                                   int64_t* solves) {
  LPURT_ASSERT(program.blocks.size() == 1 && n >= 1);
  TimelineSolver solver(program, plan);
  // Busy cycles: the compute ops' durations, of which only the attention ops' depend on the position.
  const Timeline& t0 = solver.at(first_position);
  int64_t fixed_busy_cycles = 0;
  std::vector<std::size_t> attention_ops;
  for (std::size_t i = 0; i < program.ops.size(); ++i) {
    const OpKind kind = program.ops[i].kind;
    if (kind == OpKind::send || kind == OpKind::recv) continue;
    if (kind == OpKind::attention) attention_ops.push_back(i);
    else fixed_busy_cycles += t0.duration_cycles[i];
  }
  const bool shared = shared_attention_op(plan, program) >= 0;
  std::vector<BlockCost> costs(static_cast<std::size_t>(n));
  for_each_position(plan, program, solver, first_position, n, [&](int64_t i, const DecodeStep& d) {
    BlockCost& c = costs[static_cast<std::size_t>(i)];
    const DecodePace pace = pace_of(d);
    c.latency_cycles = pace.latency_cycles;
    c.busiest_stage_cycles = pace.busiest_stage_cycles;
    int64_t attention_busy = 0;
    if (shared) {
      attention_busy = static_cast<int64_t>(attention_ops.size()) * d.attention_cycles;
    } else {
      for (const std::size_t op : attention_ops)
        attention_busy += compute_op_cycles(program, program.ops[op], plan, first_position + i);
    }
    c.busy_chip_cycles = fixed_busy_cycles + attention_busy;
  });
  if (solves != nullptr) *solves += solver.solves();
  return costs;
}

std::vector<StageSpan> block_stage_spans(const Plan& plan, const Program& program, int64_t first_position,
                                         int64_t n) {
  LPURT_ASSERT(program.blocks.size() == 1 && n >= 1);
  TimelineSolver solver(program, plan);
  const auto pp = static_cast<std::size_t>(plan.pp);
  std::vector<StageSpan> spans(static_cast<std::size_t>(n) * pp);
  for_each_position(plan, program, solver, first_position, n, [&](int64_t i, const DecodeStep& d) {
    for (std::size_t s = 0; s < pp; ++s)
      spans[static_cast<std::size_t>(i) * pp + s] = {d.stage_first_cycles[s], d.stage_last_cycles[s]};
  });
  return spans;
}

std::unordered_map<int64_t, ResourceUse> resource_uses(const Program& p, const Timeline& t) {
  const std::size_t n_ops = p.ops.size();
  // Each op's predecessor on its unit or on each link of its route: [resource_pred_begin[i], [i + 1]).
  std::vector<int32_t> resource_pred_begin(n_ops + 1, 0), resource_preds;
  // The resources in order of first use: [resources] their keys, last ops and uses. A unit's index is
  // found in a flat table and only a link's by its key (a program has about as many ops as hops).
  std::vector<int64_t> keys;
  std::vector<int32_t> last;
  std::vector<ResourceUse> used;
  std::vector<int32_t> unit_index(static_cast<std::size_t>(2 * p.n_chips), -1);
  std::unordered_map<int64_t, int32_t> link_index;
  auto use = [&](int32_t& index, int64_t key, std::size_t i) {
    if (index < 0) {
      index = static_cast<int32_t>(keys.size());
      keys.push_back(key);
      last.push_back(static_cast<int32_t>(i));
      used.push_back({t.start_cycles[i], 0, 0});
    } else {
      resource_preds.push_back(std::exchange(last[static_cast<std::size_t>(index)], static_cast<int32_t>(i)));
    }
    used[static_cast<std::size_t>(index)].busy_cycles += t.duration_cycles[i];
  };
  for (std::size_t i = 0; i < n_ops; ++i) {
    const Op& op = p.ops[i];
    resource_pred_begin[i] = static_cast<int32_t>(resource_preds.size());
    if (op.kind == OpKind::recv) continue;
    if (op.kind == OpKind::send) {
      for (int32_t h = 0; h < op.hop_count; ++h) {
        const int64_t key = p.link_key(p.hops[static_cast<std::size_t>(op.hop_begin + h)]);
        use(link_index.try_emplace(key, -1).first->second, key, i);
      }
      continue;
    }
    use(unit_index[static_cast<std::size_t>(2 * op.chip + (op.unit == Unit::mxm ? 0 : 1))], resource_key(op), i);
  }
  resource_pred_begin[n_ops] = static_cast<int32_t>(resource_preds.size());
  // to_end[i]: the longest chain of ops from op i's start to the last end, in reverse array order.
  std::vector<int64_t> to_end(t.duration_cycles);
  for (std::size_t i = n_ops; i-- > 0;) {
    const Op& op = p.ops[i];
    auto reach = [&](int32_t pred) {
      const auto q = static_cast<std::size_t>(pred);
      to_end[q] = std::max(to_end[q], t.duration_cycles[q] + to_end[i]);
    };
    for (int32_t k = 0; k < op.dep_count; ++k) reach(p.deps[static_cast<std::size_t>(op.dep_begin + k)]);
    for (int32_t k = resource_pred_begin[i]; k < resource_pred_begin[i + 1]; ++k) reach(resource_preds[static_cast<std::size_t>(k)]);
  }
  std::unordered_map<int64_t, ResourceUse> uses;
  uses.reserve(keys.size());
  for (std::size_t k = 0; k < keys.size(); ++k) {
    const auto op = static_cast<std::size_t>(last[k]);
    used[k].tail_cycles = to_end[op] - t.duration_cycles[op];
    uses.emplace(keys[k], used[k]);
  }
  return uses;
}

ChainedSolver::Link::Link(const Program& p, const Plan& plan) : program_(p), plan_(plan) {
  const std::size_t n_ops = p.ops.size();
  const auto n_chips = static_cast<std::size_t>(p.n_chips);
  base_duration_cycles_ = op_durations(p, plan, 0);
  chip_first_compute_.assign(n_chips, -1);
  chip_last_compute_.assign(n_chips, -1);
  unit_first_.assign(2 * n_chips, -1);
  unit_last_.assign(2 * n_chips, -1);
  std::unordered_map<int64_t, std::pair<int32_t, int32_t>> links;  // first and last op by link key
  pred_begin_.reserve(n_ops + 1);
  preds_.reserve(p.deps.size() + n_ops + p.hops.size());
  for (std::size_t i = 0; i < n_ops; ++i) {
    const Op& op = p.ops[i];
    const auto index = static_cast<int32_t>(i);
    pred_begin_.push_back(static_cast<int32_t>(preds_.size()));
    preds_.insert(preds_.end(), p.deps.begin() + op.dep_begin, p.deps.begin() + op.dep_begin + op.dep_count);
    if (op.kind == OpKind::recv) {
      trailing_recvs_.emplace_back(index, op.chip);
      continue;
    }
    if (op.kind == OpKind::send) {
      // build_program lists a send's producer (its chip's last compute op) first, then the receives whose
      // data it forwards: a send that starts with a receive (a split hand-off's all-gather, before its
      // stage computes) has no producer in the program, and waits for its chip's compute before it.
      if (op.dep_count == 0 ||
          p.ops[static_cast<std::size_t>(p.deps[static_cast<std::size_t>(op.dep_begin)])].kind == OpKind::recv)
        orphan_sends_.push_back(index);
      for (int32_t h = 0; h < op.hop_count; ++h) {
        const auto [it, first_use] = links.try_emplace(p.link_key(p.hops[static_cast<std::size_t>(op.hop_begin + h)]), index, index);
        if (!first_use) preds_.push_back(std::exchange(it->second.second, index));
      }
      continue;
    }
    const auto chip = static_cast<std::size_t>(op.chip);
    if (chip_first_compute_[chip] < 0) chip_first_compute_[chip] = index;
    chip_last_compute_[chip] = index;
    const auto unit = static_cast<std::size_t>(2 * op.chip + (op.unit == Unit::mxm ? 0 : 1));
    if (unit_last_[unit] >= 0) preds_.push_back(unit_last_[unit]);
    else unit_first_[unit] = index;
    unit_last_[unit] = index;
    if (op.kind == OpKind::attention) attention_ops_.push_back(index);
  }
  pred_begin_.push_back(static_cast<int32_t>(preds_.size()));
  trailing_recvs_.erase(std::remove_if(trailing_recvs_.begin(), trailing_recvs_.end(),
                                       [&](const std::pair<int32_t, int32_t>& r) {
                                         return r.first < chip_last_compute_[static_cast<std::size_t>(r.second)];
                                       }),
                        trailing_recvs_.end());
  for (const auto& [key, first_last] : links) {
    link_first_.emplace_back(key, first_last.first);
    link_last_.emplace_back(key, first_last.second);
  }
}

ChainedSolver::ChainedSolver(int64_t n_chips)
    : chip_compute_end_(static_cast<std::size_t>(n_chips), -1), chip_pending_end_(chip_compute_end_),
      unit_end_(static_cast<std::size_t>(2 * n_chips), -1) {}

int64_t ChainedSolver::append(const Link& g, int64_t base_position) {
  const Program& p = g.program_;
  LPURT_ASSERT(static_cast<std::size_t>(p.n_chips) == chip_compute_end_.size());
  const std::size_t n_ops = p.ops.size();
  duration_ = g.base_duration_cycles_;
  if (base_position != 0) {
    for (const int32_t i : g.attention_ops_)
      duration_[static_cast<std::size_t>(i)] = compute_op_cycles(p, p.ops[static_cast<std::size_t>(i)], g.plan_, base_position);
  }
  // What the ops before this program leave each boundary op to wait for: its release (start at the earliest).
  end_.assign(n_ops, 0);  // release times first, then ends
  auto release = [&](int32_t op, int64_t cycles) {
    int64_t& r = end_[static_cast<std::size_t>(op)];
    r = std::max(r, cycles);
  };
  for (std::size_t c = 0; c < chip_compute_end_.size(); ++c)
    if (g.chip_first_compute_[c] >= 0) release(g.chip_first_compute_[c], std::max(chip_compute_end_[c], chip_pending_end_[c]));
  for (const int32_t s : g.orphan_sends_) release(s, chip_compute_end_[static_cast<std::size_t>(p.ops[static_cast<std::size_t>(s)].chip)]);
  for (std::size_t u = 0; u < unit_end_.size(); ++u)
    if (g.unit_first_[u] >= 0) release(g.unit_first_[u], unit_end_[u]);
  for (const auto& [key, op] : g.link_first_) {
    const auto it = link_end_.find(key);
    if (it != link_end_.end()) release(op, it->second);
  }
  // A receive ends when its send does (its one predecessor, and no duration): the makespan over every op
  // is the one over the others, without reading the ops.
  int64_t makespan = makespan_cycles_;
  for (std::size_t i = 0; i < n_ops; ++i) {
    int64_t ready = end_[i];
    for (int32_t k = g.pred_begin_[i]; k < g.pred_begin_[i + 1]; ++k) ready = std::max(ready, end_[static_cast<std::size_t>(g.preds_[static_cast<std::size_t>(k)])]);
    end_[i] = ready + duration_[i];
    makespan = std::max(makespan, end_[i]);
  }
  makespan_cycles_ = makespan;
  // The state the next program starts from.
  for (std::size_t c = 0; c < chip_compute_end_.size(); ++c)
    if (g.chip_last_compute_[c] >= 0) {
      chip_compute_end_[c] = end_[static_cast<std::size_t>(g.chip_last_compute_[c])];
      chip_pending_end_[c] = -1;  // consumed by its compute ops; later receives are added below
    }
  for (const auto& [r, chip] : g.trailing_recvs_) {
    int64_t& pending = chip_pending_end_[static_cast<std::size_t>(chip)];
    pending = std::max(pending, end_[static_cast<std::size_t>(r)]);
  }
  for (std::size_t u = 0; u < unit_end_.size(); ++u)
    if (g.unit_last_[u] >= 0) unit_end_[u] = end_[static_cast<std::size_t>(g.unit_last_[u])];
  for (const auto& [key, op] : g.link_last_) link_end_[key] = end_[static_cast<std::size_t>(op)];
  return makespan_cycles_;
}

Timeline ChainedSolver::last_timeline() const {
  Timeline t;
  t.duration_cycles = duration_;
  t.start_cycles.resize(end_.size());
  for (std::size_t i = 0; i < end_.size(); ++i) t.start_cycles[i] = end_[i] - duration_[i];
  for (std::size_t i = 0; i < end_.size(); ++i) t.makespan_cycles = std::max(t.makespan_cycles, end_[i]);
  return t;
}

bool replicas_share_links(const Plan& plan, const Topology& topology) {
  std::unordered_map<int64_t, int64_t> replica_of_link;
  for (int64_t r = 0; r < std::min(plan.replicas, plan.batch); ++r)
    for (const int64_t link : replica_links(plan, topology, r)) {
      const auto [it, first_use] = replica_of_link.try_emplace(link, r);
      if (!first_use && it->second != r) return true;
    }
  return false;
}

namespace {

/// The makespan of the batch's prefill blocks on replicas [first, end) (the sequences they run, in batch
/// order), chained from one-block programs per replica.
int64_t chained_prefill_cycles(const Plan& plan, const Topology& topology, const std::vector<Block>& blocks,
                               int64_t first, int64_t end) {
  // Per replica: its middle block's program (when there are two blocks or more) and its last's.
  std::vector<std::unique_ptr<Program>> programs;
  std::vector<std::unique_ptr<ChainedSolver::Link>> middle(static_cast<std::size_t>(end - first)), last(middle.size());
  auto prepare = [&](int64_t replica, const Block& block, bool with_logits) {
    programs.push_back(std::make_unique<Program>(build_program(plan, topology, {{0, block.n_tokens, with_logits, replica}})));
    return std::make_unique<ChainedSolver::Link>(*programs.back(), plan);
  };
  for (int64_t r = first; r < end; ++r) {
    if (blocks.size() > 1) middle[static_cast<std::size_t>(r - first)] = prepare(r, blocks.front(), false);
    last[static_cast<std::size_t>(r - first)] = prepare(r, blocks.back(), true);
  }
  ChainedSolver solver(plan.n_chips());
  for (int64_t b = 0; b < plan.batch; ++b) {
    const int64_t r = plan.replica_of(b);
    if (r < first || r >= end) continue;
    for (std::size_t k = 0; k < blocks.size(); ++k)
      solver.append(k + 1 < blocks.size() ? *middle[static_cast<std::size_t>(r - first)]
                                          : *last[static_cast<std::size_t>(r - first)],
                    blocks[k].position_offset);
  }
  return solver.makespan_cycles();
}

}  // namespace

int64_t batch_prefill_cycles(const Plan& plan, int64_t prompt_tokens) {
  const std::vector<Block> blocks = prefill_blocks(prompt_tokens, plan.shape.block_tokens);
  if (blocks.empty()) return 0;
  const Topology topology = topology_for(plan);
  const int64_t used_replicas = std::min(plan.replicas, plan.batch);
  if (used_replicas == 1 || replicas_share_links(plan, topology))
    return chained_prefill_cycles(plan, topology, blocks, 0, used_replicas);
  // Replicas own their chips, and here their links too: no op of one waits for an op of another, and the
  // batch ends when the slowest replica does. Modelled one at a time, only one replica's programs are
  // held (at tp across nodes, hundreds of MB each). A replica congruent to the first has the first's
  // timelines on uniform hardware and runs no more sequences (sequence b on replica b % replicas): it
  // ends no later, and is not modelled.
  int64_t makespan = chained_prefill_cycles(plan, topology, blocks, 0, 1);
  for (int64_t r = 1; r < used_replicas; ++r)
    if (!plan.hardware.uniform() || !congruent_to_first_replica(plan, topology, r))
      makespan = std::max(makespan, chained_prefill_cycles(plan, topology, blocks, r, r + 1));
  return makespan;
}

int64_t decode_period_cycles(const Plan& plan, const Program& decode, const Timeline& timeline) {
  return decode_pace(plan, decode, timeline).period_cycles(plan.shape.n_slots);
}

int64_t decode_period_cycles(const Plan& plan, int64_t position) {
  const Topology topology = topology_for(plan);
  // Replicas are identical pipelines unless chips or links differ: then the slowest one's.
  int64_t slowest = 0;
  for (int64_t r = 0; r < (plan.hardware.uniform() ? 1 : plan.replicas); ++r) {
    const Program program = build_program(plan, topology, decode_blocks(r));
    slowest = std::max(slowest, decode_period_cycles(plan, program, compute_timeline(program, plan, position)));
  }
  return slowest;
}


StepProfile profile(const Program& p, const Timeline& t, const chip::ChipSpec& hardware) {
  StepProfile s;
  s.makespan_cycles = t.makespan_cycles;
  s.chip_compute_cycles.assign(static_cast<std::size_t>(p.n_chips), 0);
  s.chip_send_cycles.assign(static_cast<std::size_t>(p.n_chips), 0);
  std::unordered_map<int64_t, int64_t> link_busy;
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    const Op& op = p.ops[i];
    const auto chip = static_cast<std::size_t>(op.chip);
    if (op.kind == OpKind::recv) continue;
    if (op.kind != OpKind::send) {
      s.chip_compute_cycles[chip] += t.duration_cycles[i];
      continue;
    }
    s.chip_send_cycles[chip] += t.duration_cycles[i];
    ++s.n_transfers;
    s.transfer_bytes += link_bytes(op, hardware);
    for (int32_t h = 0; h < op.hop_count; ++h) {
      const Hop& hop = p.hops[static_cast<std::size_t>(op.hop_begin + h)];
      const int64_t busy = link_busy[p.link_key(hop)] += t.duration_cycles[i];
      if (busy > s.busiest_link_cycles) s.busiest_link_cycles = busy, s.busiest_link = hop;
    }
  }
  const CriticalPath path = critical_path(p, t);
  s.critical_compute_cycles = path.compute_cycles;
  s.critical_transfer_cycles = path.transfer_cycles;
  return s;
}

int64_t decode_step_cycles(const Plan& plan, int64_t position) {
  const Program program = build_program(plan, topology_for(plan), decode_blocks());
  return compute_timeline(program, plan, position).makespan_cycles;
}

namespace {

/// modelled_times with the batch's prefill cycles when known (else -1), and replica 0's decode program
/// when built (else null).
ModelledTimes times_of(const Plan& plan, int64_t prompt_tokens, int64_t output_tokens, const TimelineVisitor& visit,
                       int64_t batch_prefill_known_cycles, std::shared_ptr<const Program> known_decode) {
  ModelledTimes m;
  const Topology topology = topology_for(plan);
  const double clock_hz = plan.hardware.clock_hz;
  if (visit) {
    const auto prefill = std::make_shared<const Program>(
        build_program(plan, topology, batch_prefill_blocks(plan, prompt_tokens)));
    const Timeline prefill_timeline = compute_timeline(*prefill, plan, 0);
    m.prefill_cycles = prefill_timeline.makespan_cycles;
    visit("prefill", prefill, prefill_timeline, 0);
  } else {
    // The figures need only the makespan.
    m.prefill_cycles =
        batch_prefill_known_cycles >= 0 ? batch_prefill_known_cycles : batch_prefill_cycles(plan, prompt_tokens);
  }

  // Replicas are identical pipelines unless chips or links differ: then the decode figures are those of
  // the slowest replica (its users wait longest).
  const bool identical_replicas = plan.hardware.uniform();
  int64_t decode_replica = 0;
  // Every chip's busy cycles in one decode step of a sequence on its own replica.
  const auto n_chips = static_cast<std::size_t>(plan.n_chips());
  std::vector<int64_t> chip_compute(n_chips, 0), chip_send(n_chips, 0);
  const int64_t per_replica = plan.chips_per_replica();
  if (!identical_replicas) {
    int64_t slowest = -1;
    for (int64_t r = 0; r < plan.replicas; ++r) {
      const Program one = build_program(plan, topology, decode_blocks(r));
      const Timeline timeline = compute_timeline(one, plan, prompt_tokens);
      const StepProfile busy = profile(one, timeline, plan.hardware);
      for (int64_t c = r * per_replica; c < (r + 1) * per_replica; ++c) {
        chip_compute[static_cast<std::size_t>(c)] = busy.chip_compute_cycles[static_cast<std::size_t>(c)];
        chip_send[static_cast<std::size_t>(c)] = busy.chip_send_cycles[static_cast<std::size_t>(c)];
      }
      const int64_t cycles = decode_period_cycles(plan, one, timeline);
      if (cycles > slowest) slowest = cycles, decode_replica = r;
    }
  }
  const auto decode =
      known_decode != nullptr && decode_replica == 0
          ? std::move(known_decode)
          : std::make_shared<const Program>(build_program(plan, topology, decode_blocks(decode_replica)));
  m.decode_steps = std::max<int64_t>(0, output_tokens - 1);
  // With no decode step, the profile and TPOT describe the step that would come next.
  TimelineSolver solver(*decode, plan);
  m.decode = profile(*decode, solver.at(prompt_tokens), plan.hardware);
  const DecodeStep first_step = measure(plan, *decode, solver.at(prompt_tokens));
  for (std::size_t s = 0; s < first_step.stage_first_cycles.size(); ++s)
    m.decode_stage_cycles.push_back(first_step.stage_last_cycles[s] - first_step.stage_first_cycles[s]);
  if (identical_replicas) {
    // The replicas run the same program on their own chips.
    for (std::size_t c = 0; c < n_chips; ++c) {
      chip_compute[c] = m.decode.chip_compute_cycles[c % static_cast<std::size_t>(per_replica)];
      chip_send[c] = m.decode.chip_send_cycles[c % static_cast<std::size_t>(per_replica)];
    }
  }
  m.decode.chip_compute_cycles = std::move(chip_compute);
  m.decode.chip_send_cycles = std::move(chip_send);
  // Each decode step is one token of every sequence: with the batch interleaved, a user waits one period.
  // A trace needs every step's timeline; the figures alone need only the steps where decisions change.
  const int64_t n_steps = std::max<int64_t>(1, m.decode_steps);
  int64_t compute_cycles = 0, transfer_cycles = 0, period = 0;
  std::vector<StepFigures> steps_figures;
  if (!visit) steps_figures = decode_step_figures(plan, *decode, solver, prompt_tokens, n_steps);
  for (int64_t i = 0; i < n_steps; ++i) {
    StepFigures f;
    if (visit) {
      const Timeline& step = solver.at(prompt_tokens + i);
      f = figures_of(plan, summarize(plan, *decode, step, 0));
      if (i < m.decode_steps) visit("decode " + std::to_string(i + 1), decode, step, m.prefill_cycles + m.decode_cycles);
    } else {
      f = steps_figures[static_cast<std::size_t>(i)];
    }
    compute_cycles += f.critical_compute_cycles;
    transfer_cycles += f.critical_transfer_cycles;
    period = f.period_cycles;
    if (i < m.decode_steps) m.decode_cycles += f.period_cycles;
  }
  const int64_t steps = std::max<int64_t>(1, m.decode_steps);
  const int64_t period_cycles = m.decode_steps > 0 ? m.decode_cycles : period;
  auto per_step_s = [&](int64_t cycles) { return static_cast<double>(cycles) / static_cast<double>(steps) / clock_hz; };
  m.ttft_s = static_cast<double>(m.prefill_cycles) / clock_hz;
  m.tpot_s = per_step_s(period_cycles);
  m.tpot_compute_s = per_step_s(compute_cycles);
  m.tpot_transfer_s = per_step_s(transfer_cycles);
  m.tpot_idle_s = per_step_s(period_cycles - compute_cycles - transfer_cycles);
  m.tokens_per_s_user = 1.0 / m.tpot_s;
  m.tokens_per_s_system = static_cast<double>(plan.batch) * m.tokens_per_s_user;
  return m;
}

}  // namespace

ModelledTimes modelled_times(const Plan& plan, int64_t prompt_tokens, int64_t output_tokens,
                             const TimelineVisitor& visit) {
  return times_of(plan, prompt_tokens, output_tokens, visit, -1, nullptr);
}

ModelledTimes modelled_times(const PlanChoice& choice, int64_t prompt_tokens, int64_t output_tokens) {
  return times_of(choice.plan, prompt_tokens, output_tokens, {},
                  prompt_tokens == choice.prompt_tokens ? choice.batch_prefill_cycles : -1, choice.decode_program);
}

}  // namespace lpurt::partition
