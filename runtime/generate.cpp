#include "runtime/generate.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>

#include "chip/error.hpp"
#include "chip/kernels.hpp"

namespace lpurt::runtime {

namespace {

double process_cpu_s() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

/// Prefill every listed sequence, then decode rounds over them; sequences[i] is the batch index of
/// prompts[i]. Returns one Generation per listed sequence (host times are the whole call's).
std::vector<Generation> run_sequences(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                      const std::vector<int64_t>& sequences, int64_t n_tokens,
                                      const std::function<void(int64_t, int64_t)>& progress, const LogitsSink& sink) {
  using clock = std::chrono::steady_clock;
  const int64_t vocab = engine.plan().model.vocab_size;
  validate_prompts(prompts, n_tokens, engine.plan());
  const auto n_prompt = static_cast<int64_t>(prompts.front().size());
  const bool functional = !engine.timing_only();
  const bool keep_logits = functional && !sink;
  std::vector<Generation> out(prompts.size());
  for (auto& g : out) {
    if (!functional) continue;  // timing-only: the same programs in the same order, no tokens
    g.tokens.assign(static_cast<std::size_t>(n_tokens), 0);
    if (keep_logits) g.logits.assign(static_cast<std::size_t>(n_tokens * vocab), 0.0f);
  }
  std::vector<float> row(functional && sink ? static_cast<std::size_t>(vocab) : 0);  // [vocab] the sink's row
  // Where the logits of token k of out[i] go, and then to the sink.
  auto logits_of = [&](std::size_t i, int64_t k) { return keep_logits ? out[i].logits.data() + k * vocab : row.data(); };
  auto emit = [&](std::size_t i, int64_t k, const float* logits) {
    out[i].tokens[static_cast<std::size_t>(k)] = static_cast<int32_t>(chip::argmax(logits, vocab));
    if (sink) sink(static_cast<int64_t>(i), k, logits);
  };
  const std::vector<int32_t> zeros(static_cast<std::size_t>(n_prompt), 0);
  const auto t0 = clock::now();
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    float* logits = functional ? logits_of(i, 0) : nullptr;
    engine.forward(sequences[i], functional ? prompts[i].data() : zeros.data(), 0, n_prompt, logits);
    if (functional) emit(i, 0, logits);
  }
  const auto t1 = clock::now();
  const double cpu_t1_s = process_cpu_s();
  if (progress) progress(1, n_tokens);
  std::vector<double> step_s;  // [n_tokens - 1] host time of each decode round
  step_s.reserve(static_cast<std::size_t>(n_tokens - 1));
  for (int64_t k = 1; k < n_tokens; ++k) {
    const auto step_t0 = clock::now();
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      float* logits = functional ? logits_of(i, k) : nullptr;
      const int32_t* token = functional ? &out[i].tokens[static_cast<std::size_t>(k - 1)] : zeros.data();
      engine.forward(sequences[i], token, n_prompt + k - 1, 1, logits);
      if (functional) emit(i, k, logits);
    }
    step_s.push_back(std::chrono::duration<double>(clock::now() - step_t0).count());
    if (progress) progress(k + 1, n_tokens);
  }
  const auto t2 = clock::now();
  const double decode_cpu_s = process_cpu_s() - cpu_t1_s;
  // The median resists the stalls a shared host adds to a few steps; the mean (decode_s / steps) does not.
  double median_s = 0;
  if (!step_s.empty()) {
    const auto middle = step_s.begin() + static_cast<std::ptrdiff_t>(step_s.size() / 2);
    std::nth_element(step_s.begin(), middle, step_s.end());
    median_s = *middle;
  }
  for (auto& g : out) {
    g.host_prefill_s = std::chrono::duration<double>(t1 - t0).count();
    g.host_decode_s = std::chrono::duration<double>(t2 - t1).count();
    g.host_decode_step_median_s = median_s;
    g.host_decode_cpu_s = decode_cpu_s;
  }
  return out;
}

}  // namespace

void validate_prompts(const std::vector<std::vector<int32_t>>& prompts, int64_t n_tokens, const partition::Plan& plan) {
  if (prompts.empty()) throw Error("no sequences to run: give at least one prompt", ExitCode::usage);
  const std::size_t n_prompt = prompts.front().size();
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    const auto& p = prompts[b];
    if (p.empty()) throw Error("the prompt is empty; give --prompt, or --prompt-len of at least 1", ExitCode::usage);
    if (p.size() != n_prompt)
      throw Error("every prompt of a batch must have the same length (sequence " + std::to_string(b) + " has " +
                      std::to_string(p.size()) + ", sequence 0 has " + std::to_string(n_prompt) + ")",
                  ExitCode::usage);
    for (std::size_t i = 0; i < p.size(); ++i)
      if (p[i] < 0 || p[i] >= plan.model.vocab_size)
        throw Error("--prompt: token " + std::to_string(p[i]) + " (sequence " + std::to_string(b) + ", position " +
                        std::to_string(i) + ") is outside the vocabulary [0, " + std::to_string(plan.model.vocab_size) +
                        ")",
                    ExitCode::usage);
  }
  if (n_tokens < 1) throw Error("--tokens must be at least 1 (got " + std::to_string(n_tokens) + ")", ExitCode::usage);
  if (static_cast<int64_t>(n_prompt) + n_tokens - 1 > plan.shape.context)
    throw chip::CapacityError("prompt (" + std::to_string(n_prompt) + ") + tokens (" + std::to_string(n_tokens) +
                              ") - 1 exceeds the context of " + std::to_string(plan.shape.context) +
                              " positions (see --context and max_seq_len)");
}

Generation generate(Engine& engine, const std::vector<int32_t>& prompt, int64_t n_tokens, int64_t sequence,
                    const std::function<void(int64_t, int64_t)>& progress) {
  return std::move(run_sequences(engine, {prompt}, {sequence}, n_tokens, progress, {}).front());
}

std::vector<Generation> generate_batch(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                       int64_t n_tokens, const std::function<void(int64_t, int64_t)>& progress,
                                       const LogitsSink& sink) {
  std::vector<int64_t> sequences(prompts.size());
  for (std::size_t i = 0; i < sequences.size(); ++i) sequences[i] = static_cast<int64_t>(i);
  return run_sequences(engine, prompts, sequences, n_tokens, progress, sink);
}

}  // namespace lpurt::runtime
