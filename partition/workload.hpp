#pragma once
/// \file
/// Serving workloads: the requests `lpurt serve` receives, from a trace (a CSV with Vidur's column names)
/// or generated (arrivals at a rate, Poisson or gamma with a coefficient of variation; prompt and output
/// lengths fixed, uniform or Zipf). Generation is a pure function of its spec and seed: the same requests
/// on every rank and every platform (the samplers are lpurt's own, not the standard library's, whose
/// distributions differ between implementations).
///
/// Example usage:
/// \code
///   WorkloadSpec spec;
///   spec.rate_per_s = 50, spec.n_requests = 1000, spec.seed = 7;
///   spec.prompt = parse_length_dist("uniform:128:512", "--prompt-len-dist");
///   std::vector<ServeRequest> requests = generate_workload(spec);
/// \endcode

#include <cstdint>
#include <string>
#include <vector>

#include "chip/error.hpp"

namespace lpurt::partition {

/// A bad workload: a malformed trace, or a value a workload cannot have.
class WorkloadError : public Error {
 public:
  explicit WorkloadError(const std::string& message, ExitCode code = ExitCode::input) : Error(message, code) {}
};

/// One request of a serving workload.
struct ServeRequest {
  int64_t id = 0;               ///< its row in the workload, from 0 (trace order)
  double arrived_at_s = 0;      ///< arrival, seconds from the workload's start
  int64_t prompt_tokens = 0;    ///< num_prefill_tokens
  int64_t output_tokens = 0;    ///< num_decode_tokens: tokens generated, the first from the prefill
  std::vector<int32_t> prompt;  ///< [prompt_tokens] token ids, or empty: the synthetic prompt of request `id`
};

/// A distribution of token counts.
struct LengthDist {
  enum class Kind { fixed, uniform, zipf };
  Kind kind = Kind::fixed;
  int64_t low = 1;      ///< fixed: the value; uniform: the smallest value
  int64_t high = 1;     ///< uniform: the largest value (inclusive); zipf: MAX
  double exponent = 1;  ///< zipf: S, P(k) proportional to k^-S for k = 1 .. MAX
  /// The largest value it can draw.
  int64_t max() const { return kind == Kind::fixed ? low : high; }
};
/// Parses "uniform:A:B" (A..B inclusive, 1 <= A <= B) or "zipf:S:MAX" (S > 0, MAX >= 1); `flag` names the
/// option in the error (WorkloadError, usage).
LengthDist parse_length_dist(const std::string& text, const std::string& flag);
/// A fixed count (at least 1).
LengthDist fixed_length(int64_t n);
/// "512", "uniform:128:512", "zipf:1.1:2048": the form parse_length_dist reads.
std::string describe(const LengthDist& dist);

/// How requests arrive: a Poisson process, or gamma-distributed gaps with a coefficient of variation
/// (1: Poisson; above 1: burstier).
enum class Arrivals { poisson, gamma };
/// "poisson" or "gamma"; throws WorkloadError (usage) otherwise.
Arrivals parse_arrivals(const std::string& name);
const char* arrivals_name(Arrivals a);

struct WorkloadSpec {
  double rate_per_s = 1;  ///< mean arrivals per second
  int64_t n_requests = 1;
  Arrivals arrivals = Arrivals::poisson;
  double cv = 1;      ///< gamma: standard deviation over mean of the gaps
  LengthDist prompt;  ///< prompt lengths
  LengthDist output;  ///< output lengths
  uint64_t seed = 1;
};

/// The most requests a workload may have: far above any study, low enough that the per-request state of
/// a simulation fits a workstation's memory.
inline constexpr int64_t max_requests = 10'000'000;

/// Requests 0 .. n_requests - 1: request 0 arrives at 0, each next one a gap later (exponential gaps of
/// mean 1 / rate, or gamma gaps of that mean and coefficient of variation cv). Arrivals, prompt lengths
/// and output lengths are drawn from three streams of the seed, so changing one distribution leaves the
/// others' draws as they were. Throws WorkloadError (usage) for a rate, count or cv out of range.
std::vector<ServeRequest> generate_workload(const WorkloadSpec& spec);

/// Reads a trace: a header line naming the columns, then one request per line. Required columns
/// `arrived_at` (seconds, >= 0), `num_prefill_tokens` and `num_decode_tokens` (integers >= 1); optional
/// `prompt` (token ids separated by spaces; their count must equal num_prefill_tokens); other columns are
/// ignored (Vidur's traces have more). Fields may be quoted as in RFC 4180. `origin` (the file) names
/// the line and column of any error (WorkloadError, input).
std::vector<ServeRequest> parse_workload_csv(const std::string& text, const std::string& origin);

}  // namespace lpurt::partition
