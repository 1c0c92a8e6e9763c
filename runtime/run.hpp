#pragma once
/// \file
/// One `lpurt run`: plan, load, generate, and the summary SPEC promises (modelled and host times).

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "chip/hardware.hpp"
#include "io/result_file.hpp"
#include "io/tokenizer.hpp"
#include "io/weight_source.hpp"
#include "partition/plan.hpp"
#include "partition/timing.hpp"
#include "runtime/engine.hpp"
#include "runtime/generate.hpp"

namespace lpurt::runtime {

/// The prompt and output lengths of `lpurt plan`, `lpurt run` and a sweep's points unless told otherwise:
/// one pair, so that plan's and run's modelled figures agree for the same layout, and short, so that a
/// functional run of the default model takes a moment. Studies at scale give their own (e.g. 512 + 128).
inline constexpr int64_t default_prompt_len = 16;
inline constexpr int64_t default_output_tokens = 16;
/// The longest step timeout (seconds; 0 means "wait forever"): a week is far above any transfer's wait,
/// and a finite bound keeps every deadline a representable time.
inline constexpr double max_step_timeout_s = 7 * 24 * 3600.0;
/// The most replays of one corrupted token: past this a link is broken, not noisy, and a run at a high
/// error rate must fail rather than replay for hours.
inline constexpr int max_replays_limit = 1000;

struct RunConfig {
  partition::PlanRequest request;
  std::vector<std::vector<int32_t>> prompts;  ///< [batch] the tokens each sequence is fed, positions from 0
  int64_t n_tokens = default_output_tokens;  ///< tokens to generate
  int n_ranks = 1;              ///< MPI ranks hosting the chips
  std::string trace_path;       ///< Chrome trace of the modelled timeline, written by rank 0 (empty: none)
  bool force = false;           ///< replace existing output files
  bool timing_only = false;     ///< same plan, schedule and message pattern, no weights and no payload
  FaultOptions faults;          ///< step timeout and injected faults
  /// Decodes each sequence's generated tokens into RunResult::texts (null: no tokenizer, no texts).
  std::shared_ptr<const io::Tokenizer> tokenizer;
  /// A plan already made for this request and hardware (a sweep plans first to sort out infeasible
  /// points); null: the session plans.
  std::shared_ptr<const partition::Plan> plan;
};

/// A deterministic synthetic prompt of n tokens for a vocabulary of vocab_size (for --prompt-len);
/// every sequence of a batch gets its own.
std::vector<int32_t> synthetic_prompt(int64_t n, int64_t vocab_size, int64_t sequence = 0);

/// One run on the ranks of `comm`: the constructor is the setup (plan, chips, weights: it throws on bad
/// input and makes no collective call), run() the steady state (collective).
class RunSession {
 public:
  RunSession(io::WeightSource& source, const chip::ChipSpec& hardware, const RunConfig& config, MPI_Comm comm);
  ~RunSession();
  /// Generates and returns tokens, summary and metrics on every rank. `progress(done, total)` reports
  /// generated tokens; each row of logits goes to `logits` as it is produced (every rank has them; rank 0
  /// writes them to the result file) and none is kept.
  io::RunResult run(const std::function<void(int64_t, int64_t)>& progress = {}, const LogitsSink& logits = {});

 private:
  struct State;
  std::unique_ptr<State> state_;
};

/// Runs `setup` on every rank of `comm`, then agrees (one collective) on whether it failed anywhere. If
/// any rank threw, every rank throws AgreedError with the lowest failing rank's message and code.
void agree_on_setup(MPI_Comm comm, const std::function<void()>& setup);

/// The agreement itself (collective): every rank gives its error (code success: none). If any rank has
/// one, every rank throws AgreedError with the lowest such rank's message and code.
void agree_on_error(MPI_Comm comm, std::string message, ExitCode code);

/// The summary fields shared by `plan` and `run` (layout, SRAM, modelled times).
io::Record plan_summary(const partition::Plan& plan, const partition::ModelledTimes& times, int64_t prompt_tokens,
                        int64_t output_tokens);

}  // namespace lpurt::runtime
