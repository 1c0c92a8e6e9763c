#pragma once
/// \file
/// `lpurt serve`: the command line of a serving run (SPEC "Serving"), parsed into runtime::ServeConfig.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "io/record.hpp"
#include "partition/plan.hpp"
#include "partition/serving.hpp"
#include "runtime/engine.hpp"
#include "runtime/serve.hpp"

namespace lpurt::jobs {

/// The parameters of a serving study (a job file's [serve] section, `lpurt sweep --serve name=value`), each
/// sweepable: `workload` (a trace CSV) or `rate` and `requests` (generated, with `arrivals`, `cv`,
/// `prompt_len_dist`, `tokens_dist`, `seed`; fixed lengths are the run's prompt_len and tokens), `policy`,
/// `router`, `slots`, `kv_page_tokens`, `kv_pages` (a count), `slo_ttft_ms`, `slo_tpot_ms`. As `lpurt serve`'s
/// options of the same names (dashes for underscores).
const std::vector<std::string>& serve_parameter_names();
enum class ServeValueKind { text, integer, number };
ServeValueKind serve_parameter_kind(const std::string& name);
bool is_serve_parameter(const std::string& name);

/// Throws ConfigError("<origin>: ...") naming the parameter for a value a serving run cannot take, or a
/// workload that is neither a trace nor a rate with a request count.
void check_serve_parameters(const io::Record& params, const std::string& origin);

/// The serving run `params` describe (the trace read, or the requests generated), on `request`'s layout;
/// prompt_len and tokens are the fixed lengths where no distribution is given. Throws as
/// check_serve_parameters, and WorkloadError for a bad trace.
runtime::ServeConfig make_serve_config(const io::Record& params, const partition::PlanRequest& request,
                                       int64_t prompt_len, int64_t tokens, const std::string& origin);

/// The `serve` subcommand: its options, and the run they describe.
class ServeCommand {
 public:
  explicit ServeCommand(CLI::App& app);
  bool parsed() const { return cmd_->parsed(); }
  /// Runs the serving simulation (and the functional replay on the ranks); prints the summary on rank 0.
  int run(int rank, int n_ranks);

 private:
  /// The serving configuration the options describe (the same on every rank); throws on a bad option.
  runtime::ServeConfig make_config(int n_ranks) const;
  CLI::App* cmd_;
  std::string model_, system_ = "groq-lpu-v1", workload_, arrivals_ = "poisson", prompt_dist_, tokens_dist_;
  std::string policy_ = "decode-priority", router_ = "round-robin", out_, csv_, trace_, kv_pages_;
  std::vector<std::string> overrides_;
  partition::PlanRequest request_;
  int64_t slots_ = 0, n_requests_ = 0, prompt_len_ = 0, tokens_ = 0, kv_page_tokens_ = 256;
  double rate_ = 0, cv_ = 1, slo_ttft_ms_ = 0, slo_tpot_ms_ = 0;
  uint64_t seed_ = 1;
  bool timing_only_ = false, json_ = false, force_ = false;
  runtime::FaultOptions faults_;
  CLI::Option *chips_option_ = nullptr, *tp_option_ = nullptr, *pp_option_ = nullptr, *replicas_option_ = nullptr,
              *context_option_ = nullptr, *block_option_ = nullptr, *slots_option_ = nullptr,
              *kv_pages_option_ = nullptr,
              *workload_option_ = nullptr, *rate_option_ = nullptr, *requests_option_ = nullptr,
              *arrivals_option_ = nullptr, *cv_option_ = nullptr, *prompt_len_option_ = nullptr,
              *prompt_dist_option_ = nullptr, *tokens_option_ = nullptr, *tokens_dist_option_ = nullptr,
              *slo_ttft_option_ = nullptr, *slo_tpot_option_ = nullptr;
};

}  // namespace lpurt::jobs
