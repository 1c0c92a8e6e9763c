#pragma once
/// \file
/// The figures of a serving simulation (partition/serving.hpp): per request time to first token (TTFT),
/// time per output token (TPOT) and end-to-end latency; their percentiles over the completed requests;
/// throughput and goodput under service-level objectives; energy from the chips' power model.
///
/// Definitions (modelled seconds):
/// - TTFT = first token - arrival; TPOT = (last token - first token) / (output tokens - 1), for requests of
///   at least 2 output tokens; end-to-end = last token - arrival.
/// - Percentiles are nearest-rank: the p-th of n sorted values is value ceil(p/100 x n) (1-based).
/// - makespan = the last completion - the first arrival; throughput = output tokens of completed requests
///   per second of it; goodput = requests meeting both SLOs (TTFT <= slo_ttft, TPOT <= slo_tpot, an absent
///   SLO always met) per second of it.
/// - Energy over the makespan, for the chips the plan uses: each draws power_idle_w + power_overhead_w
///   throughout and power_active_w - power_idle_w more while it computes (the compute ops' cycles:
///   within a chip they run one after another, each waiting for the one before). Joules per output
///   token and output tokens per kWh follow.
/// - Users at the SLO: the mean number of requests in the system (arrival to last token) that meet both
///   SLOs; chips per user at the SLO = chips used / that.

#include <cstdint>
#include <vector>

#include "partition/plan.hpp"
#include "partition/serving.hpp"
#include "partition/workload.hpp"

namespace lpurt::partition {

struct ServeSlo {
  double ttft_s = 0;  ///< 0: no TTFT objective
  double tpot_s = 0;  ///< 0: no TPOT objective
};

/// Per request, in seconds (NaN where undefined: a rejected request, or TPOT of a one-token output).
struct RequestFigures {
  double arrived_s = 0;
  double admitted_s = 0;
  double first_token_s = 0;
  double finished_s = 0;
  double ttft_s = 0;
  double tpot_s = 0;
  double e2e_s = 0;
  bool meets_slo = false;
};

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0;  ///< NaN with no values
};

struct ServeMetrics {
  std::vector<RequestFigures> requests;  ///< [requests] in workload order
  int64_t n_requests = 0;
  int64_t completed = 0;
  int64_t rejected = 0;
  int64_t meeting_slo = 0;
  int64_t output_tokens = 0;  ///< of the completed requests
  double makespan_s = 0;
  Percentiles ttft_s, tpot_s, e2e_s, queue_s;  ///< queue: admission - arrival
  double output_tokens_per_s = 0;
  double requests_per_s = 0;
  double goodput_requests_per_s = 0;
  int64_t chips_used = 0;
  double chip_utilization = 0;  ///< compute cycles over chips x makespan
  double energy_j = 0;
  double mean_power_w = 0;  ///< of the whole system over the makespan
  double joules_per_output_token = 0;
  double output_tokens_per_kwh = 0;
  double users_at_slo = 0;
  double chips_per_user_at_slo = 0;  ///< NaN when no request meets the SLO
};

/// Nearest-rank percentiles of `values` (NaN entries are left out).
Percentiles percentiles(std::vector<double> values);

ServeMetrics serve_metrics(const Plan& plan, const std::vector<ServeRequest>& requests, const ServeOutcome& outcome,
                           const ServeSlo& slo);

}  // namespace lpurt::partition
