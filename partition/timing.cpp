#include "partition/timing.hpp"

#include <algorithm>
#include <limits>
#include <unordered_map>

namespace lpurt::partition {

Topology topology_for(const Plan& plan) { return Topology(parse_topology(plan.hardware.topology), plan.n_chips()); }

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

int64_t decode_period_cycles(const Plan& plan, const Program& decode, const Timeline& timeline) {
  // The busiest stage: from its first compute op to its last, it cannot take the next token.
  std::vector<int64_t> first(static_cast<std::size_t>(plan.pp), std::numeric_limits<int64_t>::max()), last(first.size(), 0);
  for (std::size_t i = 0; i < decode.ops.size(); ++i) {
    const Op& op = decode.ops[i];
    if (op.kind == OpKind::send || op.kind == OpKind::recv) continue;
    const auto s = static_cast<std::size_t>(plan.chips[static_cast<std::size_t>(op.chip)].stage);
    first[s] = std::min(first[s], timeline.start_cycles[i]);
    last[s] = std::max(last[s], timeline.end_cycles(i));
  }
  int64_t busiest = 0;
  for (std::size_t s = 0; s < first.size(); ++s) busiest = std::max(busiest, last[s] - first[s]);
  return std::max(timeline.makespan_cycles, plan.shape.n_slots * busiest);
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

StepProfile profile(const Program& p, const Timeline& t) {
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
    s.transfer_bytes += op.bytes;
    for (int32_t h = 0; h < op.hop_count; ++h) {
      const Hop& hop = p.hops[static_cast<std::size_t>(op.hop_begin + h)];
      const int64_t busy = link_busy[hop.from * p.n_chips + hop.to] += t.duration_cycles[i];
      if (busy > s.busiest_link_cycles) s.busiest_link_cycles = busy, s.busiest_link = hop;
    }
  }
  // Back from the op that ends last along what each op waited for; every op starts exactly when the op
  // it waited for ends, so the path covers the makespan without gaps.
  int32_t last = -1;
  for (std::size_t i = 0; i < p.ops.size(); ++i)
    if (last < 0 || t.end_cycles(i) > t.end_cycles(static_cast<std::size_t>(last))) last = static_cast<int32_t>(i);
  for (int32_t i = last; i >= 0; i = t.waited_for[static_cast<std::size_t>(i)]) {
    const auto op = static_cast<std::size_t>(i);
    (p.ops[op].kind == OpKind::send ? s.critical_transfer_cycles : s.critical_compute_cycles) += t.duration_cycles[op];
  }
  LPURT_ASSERT(s.critical_compute_cycles + s.critical_transfer_cycles == t.makespan_cycles);
  return s;
}

int64_t decode_step_cycles(const Plan& plan, int64_t position) {
  const Program program = build_program(plan, topology_for(plan), decode_blocks());
  return compute_timeline(program, plan, position).makespan_cycles;
}

ModelledTimes modelled_times(const Plan& plan, int64_t prompt_tokens, int64_t output_tokens,
                             const TimelineVisitor& visit) {
  ModelledTimes m;
  const Topology topology = topology_for(plan);
  const double clock_hz = plan.hardware.clock_hz;
  const auto prefill = std::make_shared<const Program>(
      build_program(plan, topology, batch_prefill_blocks(plan, prompt_tokens)));
  const Timeline prefill_timeline = compute_timeline(*prefill, plan, 0);
  m.prefill_cycles = prefill_timeline.makespan_cycles;
  if (visit) visit("prefill", prefill, prefill_timeline, 0);

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
      const StepProfile busy = profile(one, timeline);
      for (int64_t c = r * per_replica; c < (r + 1) * per_replica; ++c) {
        chip_compute[static_cast<std::size_t>(c)] = busy.chip_compute_cycles[static_cast<std::size_t>(c)];
        chip_send[static_cast<std::size_t>(c)] = busy.chip_send_cycles[static_cast<std::size_t>(c)];
      }
      const int64_t cycles = decode_period_cycles(plan, one, timeline);
      if (cycles > slowest) slowest = cycles, decode_replica = r;
    }
  }
  const auto decode = std::make_shared<const Program>(build_program(plan, topology, decode_blocks(decode_replica)));
  m.decode_steps = std::max<int64_t>(0, output_tokens - 1);
  // With no decode step, the profile and TPOT describe the step that would come next.
  const Timeline first = compute_timeline(*decode, plan, prompt_tokens);
  m.decode = profile(*decode, first);
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
  int64_t compute_cycles = 0, transfer_cycles = 0;
  for (int64_t i = 0; i < std::max<int64_t>(1, m.decode_steps); ++i) {
    const Timeline step = i == 0 ? first : compute_timeline(*decode, plan, prompt_tokens + i);
    const StepProfile path = i == 0 ? m.decode : profile(*decode, step);
    compute_cycles += path.critical_compute_cycles;
    transfer_cycles += path.critical_transfer_cycles;
    if (i == m.decode_steps) break;  // no decode step: the figures describe the step that would come next
    if (visit) visit("decode " + std::to_string(i + 1), decode, step, m.prefill_cycles + m.decode_cycles);
    m.decode_cycles += decode_period_cycles(plan, *decode, step);
  }
  const int64_t steps = std::max<int64_t>(1, m.decode_steps);
  const int64_t period_cycles = m.decode_steps > 0 ? m.decode_cycles : decode_period_cycles(plan, *decode, first);
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

}  // namespace lpurt::partition
