#include "runtime/generate.hpp"

#include <chrono>

#include "chip/error.hpp"
#include "chip/kernels.hpp"

namespace lpurt::runtime {

Generation generate(Engine& engine, const std::vector<int32_t>& prompt, int64_t n_tokens, int64_t slot,
                    const std::function<void(int64_t, int64_t)>& progress) {
  using clock = std::chrono::steady_clock;
  const int64_t vocab = engine.plan().model.vocab_size;
  const auto n_prompt = static_cast<int64_t>(prompt.size());
  if (n_prompt < 1) throw Error("the prompt is empty; give --prompt or --prompt-len", ExitCode::usage);
  if (n_tokens < 1) throw Error("--tokens must be at least 1", ExitCode::usage);
  if (n_prompt + n_tokens - 1 > engine.plan().shape.context)
    throw chip::CapacityError("prompt (" + std::to_string(n_prompt) + ") + tokens (" + std::to_string(n_tokens) +
                              ") - 1 exceeds the context of " + std::to_string(engine.plan().shape.context) +
                              " positions");
  Generation g;
  if (engine.timing_only()) {
    // The same programs in the same order; token ids do not matter without payload.
    const std::vector<int32_t> zeros(prompt.size(), 0);
    const auto t0 = clock::now();
    engine.forward(slot, zeros.data(), 0, n_prompt, nullptr);
    const auto t1 = clock::now();
    if (progress) progress(1, n_tokens);
    for (int64_t k = 1; k < n_tokens; ++k) {
      engine.forward(slot, zeros.data(), n_prompt + k - 1, 1, nullptr);
      if (progress) progress(k + 1, n_tokens);
    }
    g.host_prefill_s = std::chrono::duration<double>(t1 - t0).count();
    g.host_decode_s = std::chrono::duration<double>(clock::now() - t1).count();
    return g;
  }
  g.tokens.assign(static_cast<std::size_t>(n_tokens), 0);
  g.logits.assign(static_cast<std::size_t>(n_tokens * vocab), 0.0f);

  const auto t0 = clock::now();
  engine.forward(slot, prompt.data(), 0, n_prompt, g.logits.data());
  g.tokens[0] = static_cast<int32_t>(chip::argmax(g.logits.data(), vocab));
  const auto t1 = clock::now();
  if (progress) progress(1, n_tokens);
  for (int64_t k = 1; k < n_tokens; ++k) {
    float* logits = g.logits.data() + k * vocab;
    engine.forward(slot, &g.tokens[static_cast<std::size_t>(k - 1)], n_prompt + k - 1, 1, logits);
    g.tokens[static_cast<std::size_t>(k)] = static_cast<int32_t>(chip::argmax(logits, vocab));
    if (progress) progress(k + 1, n_tokens);
  }
  const auto t2 = clock::now();
  g.host_prefill_s = std::chrono::duration<double>(t1 - t0).count();
  g.host_decode_s = std::chrono::duration<double>(t2 - t1).count();
  return g;
}

}  // namespace lpurt::runtime
