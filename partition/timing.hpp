#pragma once
/// \file
/// Modelled times of a generation run, a pure function of the plan and the request (never of the host):
/// prefill as chunks of block_tokens flowing through the pipeline stages, then one decode step per
/// further output token.

#include <cstdint>

#include "partition/plan.hpp"

namespace lpurt::partition {

struct ModelledTimes {
  int64_t prefill_cycles = 0;      ///< prompt in, first token out
  int64_t decode_cycles = 0;       ///< all decode steps (tokens 2..K)
  int64_t decode_steps = 0;
  double ttft_s = 0;               ///< time to first token
  double tpot_s = 0;               ///< time per output token after the first (mean over decode steps)
  double tokens_per_s_user = 0;
  double tokens_per_s_system = 0;
};

/// Prompt of `prompt_tokens`, `output_tokens` generated (the first from the prefill's logits).
ModelledTimes modelled_times(const Plan& plan, int64_t prompt_tokens, int64_t output_tokens);

}  // namespace lpurt::partition
