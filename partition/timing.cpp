#include "partition/timing.hpp"

#include <algorithm>
#include <unordered_map>

namespace lpurt::partition {

Topology topology_for(const Plan& plan) { return Topology(parse_topology(plan.hardware.topology), plan.n_chips()); }

std::vector<Block> prefill_blocks(int64_t prompt_tokens, int64_t block_tokens) {
  std::vector<Block> blocks;
  for (int64_t first = 0; first < prompt_tokens; first += block_tokens) {
    const int64_t n = std::min(block_tokens, prompt_tokens - first);
    blocks.push_back({first, n, first + n == prompt_tokens});
  }
  return blocks;
}

std::vector<Block> decode_blocks() { return {{0, 1, true}}; }

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
      build_program(plan, topology, prefill_blocks(prompt_tokens, plan.shape.block_tokens)));
  const Timeline prefill_timeline = compute_timeline(*prefill, plan, 0);
  m.prefill_cycles = prefill_timeline.makespan_cycles;
  if (visit) visit("prefill", prefill, prefill_timeline, 0);

  const auto decode = std::make_shared<const Program>(build_program(plan, topology, decode_blocks()));
  m.decode_steps = std::max<int64_t>(0, output_tokens - 1);
  // With no decode step, the profile and TPOT describe the step that would come next.
  const Timeline first = compute_timeline(*decode, plan, prompt_tokens);
  m.decode = profile(*decode, first);
  for (int64_t i = 0; i < m.decode_steps; ++i) {
    const Timeline step = i == 0 ? first : compute_timeline(*decode, plan, prompt_tokens + i);
    if (visit) visit("decode " + std::to_string(i + 1), decode, step, m.prefill_cycles + m.decode_cycles);
    m.decode_cycles += step.makespan_cycles;
  }
  const double step_cycles = m.decode_steps > 0
                                 ? static_cast<double>(m.decode_cycles) / static_cast<double>(m.decode_steps)
                                 : static_cast<double>(first.makespan_cycles);
  m.ttft_s = static_cast<double>(m.prefill_cycles) / clock_hz;
  m.tpot_s = step_cycles / clock_hz;
  m.tokens_per_s_user = 1.0 / m.tpot_s;
  m.tokens_per_s_system = static_cast<double>(plan.shape.n_slots) * m.tokens_per_s_user;
  return m;
}

}  // namespace lpurt::partition
