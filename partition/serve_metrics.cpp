#include "partition/serve_metrics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace lpurt::partition {

namespace {
constexpr double nan = std::numeric_limits<double>::quiet_NaN();
}  // namespace

Percentiles percentiles(std::vector<double> values) {
  values.erase(std::remove_if(values.begin(), values.end(), [](double v) { return std::isnan(v); }), values.end());
  if (values.empty()) return {nan, nan, nan};
  std::sort(values.begin(), values.end());
  auto at = [&](double p) {
    const auto n = static_cast<double>(values.size());
    const auto rank = static_cast<std::size_t>(std::max(1.0, std::ceil(p / 100.0 * n)));
    return values[std::min(rank, values.size()) - 1];
  };
  return {at(50), at(90), at(99)};
}

ServeMetrics serve_metrics(const Plan& plan, const std::vector<ServeRequest>& requests, const ServeOutcome& outcome,
                           const ServeSlo& slo) {
  ServeMetrics m;
  const double clock_hz = plan.hardware.clock_hz;
  auto seconds = [&](int64_t cycles) { return cycles < 0 ? nan : static_cast<double>(cycles) / clock_hz; };
  m.n_requests = static_cast<int64_t>(requests.size());
  m.requests.resize(requests.size());
  int64_t first_arrival = std::numeric_limits<int64_t>::max(), last_finish = 0;
  std::vector<double> ttft, tpot, e2e, queue;
  double slo_time_in_system_s = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const RequestOutcome& o = outcome.requests[i];
    RequestFigures& f = m.requests[i];
    f.arrived_s = seconds(o.arrived_cycles);
    f.admitted_s = seconds(o.admitted_cycles);
    f.first_token_s = seconds(o.first_token_cycles);
    f.finished_s = seconds(o.finished_cycles);
    first_arrival = std::min(first_arrival, o.arrived_cycles);
    if (o.rejected) {
      ++m.rejected;
      f.ttft_s = f.tpot_s = f.e2e_s = nan;
      continue;
    }
    LPURT_ASSERT(o.finished_cycles >= 0);
    ++m.completed;
    m.output_tokens += requests[i].output_tokens;
    last_finish = std::max(last_finish, o.finished_cycles);
    f.ttft_s = seconds(o.first_token_cycles - o.arrived_cycles);
    f.tpot_s = requests[i].output_tokens > 1 ? seconds(o.finished_cycles - o.first_token_cycles) /
                                                   static_cast<double>(requests[i].output_tokens - 1)
                                             : nan;
    f.e2e_s = seconds(o.finished_cycles - o.arrived_cycles);
    f.meets_slo = (slo.ttft_s <= 0 || f.ttft_s <= slo.ttft_s) &&
                  (slo.tpot_s <= 0 || std::isnan(f.tpot_s) || f.tpot_s <= slo.tpot_s);
    if (f.meets_slo) {
      ++m.meeting_slo;
      slo_time_in_system_s += f.e2e_s;
    }
    ttft.push_back(f.ttft_s);
    tpot.push_back(f.tpot_s);
    e2e.push_back(f.e2e_s);
    queue.push_back(seconds(o.admitted_cycles - o.arrived_cycles));
  }
  m.ttft_s = percentiles(std::move(ttft));
  m.tpot_s = percentiles(std::move(tpot));
  m.e2e_s = percentiles(std::move(e2e));
  m.queue_s = percentiles(std::move(queue));
  m.makespan_s = m.completed > 0 ? seconds(last_finish - first_arrival) : 0;
  auto per_second = [&](double x) { return m.makespan_s > 0 ? x / m.makespan_s : 0.0; };
  m.output_tokens_per_s = per_second(static_cast<double>(m.output_tokens));
  m.requests_per_s = per_second(static_cast<double>(m.completed));
  m.goodput_requests_per_s = per_second(static_cast<double>(m.meeting_slo));
  m.chips_used = plan.n_chips();
  const auto chips = static_cast<double>(m.chips_used);
  const double busy_chip_s = static_cast<double>(outcome.busy_chip_cycles) / clock_hz;
  const chip::ChipSpec& hw = plan.hardware;
  m.chip_utilization = per_second(busy_chip_s) / chips;
  m.energy_j = chips * (hw.power_idle_w + hw.power_overhead_w) * m.makespan_s +
               (hw.power_active_w - hw.power_idle_w) * busy_chip_s;
  m.mean_power_w = per_second(m.energy_j);
  m.joules_per_output_token = m.output_tokens > 0 ? m.energy_j / static_cast<double>(m.output_tokens) : nan;
  m.output_tokens_per_kwh = m.energy_j > 0 ? static_cast<double>(m.output_tokens) / (m.energy_j / 3.6e6) : nan;
  m.users_at_slo = per_second(slo_time_in_system_s);
  m.chips_per_user_at_slo = m.users_at_slo > 0 ? chips / m.users_at_slo : nan;
  return m;
}

}  // namespace lpurt::partition
