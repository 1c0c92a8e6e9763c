#pragma once
/// \file
/// Greedy generation on an Engine: prefill the prompt, then feed each generated token back.

#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/engine.hpp"

namespace lpurt::runtime {

struct Generation {
  std::vector<int32_t> tokens;  ///< [K] generated
  std::vector<float> logits;    ///< [K, vocab] the logits that produced each token
  double host_prefill_s = 0;    ///< host wall time of the prefill (first token)
  double host_decode_s = 0;     ///< host wall time of the decode steps (tokens 2..K)
};

/// Generates `n_tokens` tokens after `prompt` in sequence slot `slot`. `progress(done, total)` is called
/// after each token. All buffers are sized before the first step; the loop allocates nothing.
/// On a timing-only engine the same steps run with no payload and no tokens are produced (empty result).
Generation generate(Engine& engine, const std::vector<int32_t>& prompt, int64_t n_tokens, int64_t slot,
                    const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace lpurt::runtime
