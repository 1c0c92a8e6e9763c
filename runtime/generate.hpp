#pragma once
/// \file
/// Greedy generation on an Engine: prefill the prompt, then feed each generated token back.

#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/engine.hpp"

namespace lpurt::runtime {

/// Receives the logits that produced token `token` of sequence `sequence`: row float [vocab], valid
/// during the call.
using LogitsSink = std::function<void(int64_t sequence, int64_t token, const float* row)>;

struct Generation {
  std::vector<int32_t> tokens;  ///< [K] generated
  std::vector<float> logits;    ///< [K, vocab] the logits that produced each token (empty with a LogitsSink)
  double host_prefill_s = 0;    ///< host wall time of the prefill (first token)
  double host_decode_s = 0;     ///< host wall time of the decode steps (tokens 2..K)
  double host_decode_step_median_s = 0;  ///< the median decode step (one round over the batch); 0 if K = 1
  /// CPU time of this process (every thread, user and system) over the decode steps: with the wall time,
  /// how many cores the rank kept busy, waiting included.
  double host_decode_cpu_s = 0;
};

/// Throws Error (usage) or CapacityError unless `prompts` can run on `plan`: at least one prompt, none
/// empty, all the same length, every token in the vocabulary, n_tokens >= 1, and prompt + n_tokens - 1
/// positions within the context. Setup calls it; generate() and generate_batch() call it too.
void validate_prompts(const std::vector<std::vector<int32_t>>& prompts, int64_t n_tokens, const partition::Plan& plan);

/// Generates `n_tokens` tokens after `prompt` in sequence slot `slot`. `progress(done, total)` is called
/// after each token. All buffers are sized before the first step; the loop allocates nothing.
/// On a timing-only engine the same steps run with no payload and no tokens are produced (empty result).
Generation generate(Engine& engine, const std::vector<int32_t>& prompt, int64_t n_tokens, int64_t sequence,
                    const std::function<void(int64_t, int64_t)>& progress = {});

/// The whole batch, as the modelled system runs it: every sequence's prefill, then decode rounds that
/// give each sequence its next token in turn. prompts: [batch], all the same length. Each sequence's
/// tokens and logits equal its own single-sequence run (it has its own KV slot). host_* times are the
/// batch's. `progress(done, total)` counts rounds. With a `sink`, each row of logits goes there as it is
/// produced and is not kept: the memory of the logits is one row, whatever the batch and token count.
std::vector<Generation> generate_batch(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                       int64_t n_tokens, const std::function<void(int64_t, int64_t)>& progress = {},
                                       const LogitsSink& sink = {});

}  // namespace lpurt::runtime
