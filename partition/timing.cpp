#include "partition/timing.hpp"

#include <algorithm>
#include <vector>

namespace lpurt::partition {

ModelledTimes modelled_times(const Plan& plan, int64_t prompt_tokens, int64_t output_tokens) {
  ModelledTimes m;
  const double clock_hz = plan.hardware.clock_hz;
  // Pipeline recurrence over prefill chunks: chunk c enters stage s when stage s is done with chunk c-1 and
  // stage s-1 is done with chunk c.
  const int64_t block = plan.shape.block_tokens;
  std::vector<int64_t> stage_done(static_cast<std::size_t>(plan.pp), 0);
  for (int64_t first = 0; first < prompt_tokens; first += block) {
    const int64_t n = std::min(block, prompt_tokens - first);
    const bool last_chunk = first + n == prompt_tokens;
    int64_t ready = 0;
    for (int64_t s = 0; s < plan.pp; ++s) {
      const int64_t start = std::max(ready, stage_done[static_cast<std::size_t>(s)]);
      ready = start + plan.stage_block_cycles(s, first, n, last_chunk);
      stage_done[static_cast<std::size_t>(s)] = ready;
    }
  }
  m.prefill_cycles = stage_done.empty() ? 0 : stage_done.back();
  m.decode_steps = std::max<int64_t>(0, output_tokens - 1);
  for (int64_t i = 0; i < m.decode_steps; ++i) m.decode_cycles += plan.decode_step_cycles(prompt_tokens + i);
  // With no decode step, TPOT is the step that would come next.
  const double step_cycles = m.decode_steps > 0 ? static_cast<double>(m.decode_cycles) / static_cast<double>(m.decode_steps)
                                                : static_cast<double>(plan.decode_step_cycles(prompt_tokens));
  m.ttft_s = static_cast<double>(m.prefill_cycles) / clock_hz;
  m.tpot_s = step_cycles / clock_hz;
  m.tokens_per_s_user = 1.0 / m.tpot_s;
  m.tokens_per_s_system = static_cast<double>(plan.shape.n_slots) * m.tokens_per_s_user;
  return m;
}

}  // namespace lpurt::partition
