#pragma once
/// \file
/// `lpurt serve`: the command line of a serving run (SPEC "Serving"), parsed into runtime::ServeConfig.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "partition/plan.hpp"
#include "partition/serving.hpp"
#include "runtime/engine.hpp"

namespace lpurt::jobs {

/// The `serve` subcommand: its options, and the run they describe.
class ServeCommand {
 public:
  explicit ServeCommand(CLI::App& app);
  bool parsed() const { return cmd_->parsed(); }
  /// Runs the serving simulation (and the functional replay on the ranks); prints the summary on rank 0.
  int run(int rank, int n_ranks);

 private:
  CLI::App* cmd_;
  std::string model_, system_ = "groq-lpu-v1", workload_, arrivals_ = "poisson", prompt_dist_, tokens_dist_;
  std::string policy_ = "decode-priority", router_ = "round-robin", out_, csv_, trace_;
  std::vector<std::string> overrides_;
  partition::PlanRequest request_;
  int64_t slots_ = 0, n_requests_ = 0, prompt_len_ = 0, tokens_ = 0, kv_page_tokens_ = 256;
  double rate_ = 0, cv_ = 1, slo_ttft_ms_ = 0, slo_tpot_ms_ = 0;
  uint64_t seed_ = 1;
  bool timing_only_ = false, json_ = false, force_ = false;
  runtime::FaultOptions faults_;
  CLI::Option *chips_option_ = nullptr, *tp_option_ = nullptr, *pp_option_ = nullptr, *replicas_option_ = nullptr,
              *context_option_ = nullptr, *block_option_ = nullptr, *slots_option_ = nullptr,
              *workload_option_ = nullptr, *rate_option_ = nullptr, *requests_option_ = nullptr,
              *arrivals_option_ = nullptr, *cv_option_ = nullptr, *prompt_len_option_ = nullptr,
              *prompt_dist_option_ = nullptr, *tokens_option_ = nullptr, *tokens_dist_option_ = nullptr,
              *slo_ttft_option_ = nullptr, *slo_tpot_option_ = nullptr;
};

}  // namespace lpurt::jobs
