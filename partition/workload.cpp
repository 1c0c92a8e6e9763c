#include "partition/workload.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "chip/hash.hpp"

namespace lpurt::partition {

namespace {

/// A counter-based stream of uniform draws: draw i of stream k of a seed is a pure function of the three.
class Stream {
 public:
  Stream(uint64_t seed, uint64_t stream) : key_(chip::mix(chip::mix(seed) ^ (0x5851f42d4c957f2dull * (stream + 1)))) {}
  /// Uniform in [0, 1), 53 random bits.
  double uniform() { return static_cast<double>(chip::mix(key_ + counter_++) >> 11) * 0x1.0p-53; }
  /// Uniform in (0, 1]: safe under a logarithm.
  double uniform_open() { return 1.0 - uniform(); }
  double normal() {
    // Box-Muller, one value per pair of draws (no state kept between calls).
    const double u = uniform_open(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * M_PI * v);
  }
  /// Gamma of shape k and scale 1 (Marsaglia and Tsang; k < 1 through k + 1 and a power of a uniform).
  double gamma(double k) {
    if (k < 1) return gamma(k + 1) * std::pow(uniform_open(), 1.0 / k);
    const double d = k - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      double x = 0, v = 0;
      do {
        x = normal();
        v = 1.0 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const double u = uniform_open();
      if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
    }
  }

 private:
  uint64_t key_;
  uint64_t counter_ = 0;
};

/// Draws lengths from a LengthDist (the Zipf table is built once).
class LengthSampler {
 public:
  explicit LengthSampler(const LengthDist& dist) : dist_(dist) {
    if (dist.kind != LengthDist::Kind::zipf) return;
    cdf_.reserve(static_cast<std::size_t>(dist.high));
    double total = 0;
    for (int64_t k = 1; k <= dist.high; ++k) cdf_.push_back(total += std::pow(static_cast<double>(k), -dist.exponent));
  }
  int64_t draw(Stream& s) const {
    switch (dist_.kind) {
      case LengthDist::Kind::fixed:
        return dist_.low;
      case LengthDist::Kind::uniform: {
        const auto span = static_cast<double>(dist_.high - dist_.low + 1);
        return std::min(dist_.high, dist_.low + static_cast<int64_t>(s.uniform() * span));
      }
      case LengthDist::Kind::zipf: {
        const double u = s.uniform() * cdf_.back();
        const auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
        return std::min<int64_t>(dist_.high, 1 + (it - cdf_.begin()));
      }
    }
    return dist_.low;
  }

 private:
  LengthDist dist_;
  std::vector<double> cdf_;  ///< [MAX] zipf: cumulative weights of 1 .. MAX
};

/// The largest Zipf MAX and uniform bound: beyond any model's context.
constexpr int64_t max_length = int64_t{1} << 24;

[[noreturn]] void usage(const std::string& message) { throw WorkloadError(message, ExitCode::usage); }

int64_t parse_count(const std::string& text, const std::string& what) {
  std::size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) usage(what + ": \"" + text + "\" is not an integer");
  return v;
}

double parse_real(const std::string& text, const std::string& what) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !std::isfinite(v)) usage(what + ": \"" + text + "\" is not a number");
  return v;
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, separator)) parts.push_back(part);
  if (!text.empty() && text.back() == separator) parts.emplace_back();
  return parts;
}

}  // namespace

LengthDist fixed_length(int64_t n) {
  if (n < 1 || n > max_length)
    usage("a length must be 1 .. " + std::to_string(max_length) + " (got " + std::to_string(n) + ")");
  LengthDist d;
  d.low = d.high = n;
  return d;
}

LengthDist parse_length_dist(const std::string& text, const std::string& flag) {
  const std::vector<std::string> parts = split(text, ':');
  const std::string what = flag + " " + text;
  LengthDist d;
  if (parts.size() == 3 && parts[0] == "uniform") {
    d.kind = LengthDist::Kind::uniform;
    d.low = parse_count(parts[1], what);
    d.high = parse_count(parts[2], what);
    if (d.low < 1 || d.high < d.low || d.high > max_length)
      usage(what + ": uniform:A:B needs 1 <= A <= B <= " + std::to_string(max_length));
    return d;
  }
  if (parts.size() == 3 && parts[0] == "zipf") {
    d.kind = LengthDist::Kind::zipf;
    d.exponent = parse_real(parts[1], what);
    d.high = parse_count(parts[2], what);
    d.low = 1;
    if (!(d.exponent > 0 && d.exponent <= 100) || d.high < 1 || d.high > max_length)
      usage(what + ": zipf:S:MAX needs 0 < S <= 100 and 1 <= MAX <= " + std::to_string(max_length));
    return d;
  }
  usage(what + ": expected uniform:A:B or zipf:S:MAX (e.g. uniform:128:512, zipf:1.1:2048)");
}

std::string describe(const LengthDist& d) {
  switch (d.kind) {
    case LengthDist::Kind::fixed:
      return std::to_string(d.low);
    case LengthDist::Kind::uniform:
      return "uniform:" + std::to_string(d.low) + ":" + std::to_string(d.high);
    case LengthDist::Kind::zipf:
      return "zipf:" + format_number(d.exponent) + ":" + std::to_string(d.high);
  }
  return "?";
}

Arrivals parse_arrivals(const std::string& name) {
  if (name == "poisson") return Arrivals::poisson;
  if (name == "gamma") return Arrivals::gamma;
  usage("--arrivals must be poisson or gamma (got \"" + name + "\")");
}

const char* arrivals_name(Arrivals a) { return a == Arrivals::poisson ? "poisson" : "gamma"; }

std::vector<ServeRequest> generate_workload(const WorkloadSpec& spec) {
  if (!(spec.rate_per_s > 0 && spec.rate_per_s <= 1e9))
    usage("--rate must be above 0 and at most 1e9 requests per second (got " + format_number(spec.rate_per_s) + ")");
  if (spec.n_requests < 1 || spec.n_requests > max_requests)
    usage("--requests must be 1 .. " + std::to_string(max_requests) + " (got " + std::to_string(spec.n_requests) + ")");
  if (spec.arrivals == Arrivals::gamma && !(spec.cv >= 0.01 && spec.cv <= 100))
    usage("--cv must be 0.01 .. 100 (got " + format_number(spec.cv) + ")");
  Stream gaps(spec.seed, 0), prompts(spec.seed, 1), outputs(spec.seed, 2);
  const LengthSampler prompt_len(spec.prompt), output_len(spec.output);
  // Gamma gaps of mean 1 / rate and coefficient of variation cv: shape 1 / cv^2, scale 1 / (rate x shape).
  const double shape = 1.0 / (spec.cv * spec.cv);
  std::vector<ServeRequest> requests(static_cast<std::size_t>(spec.n_requests));
  double t = 0;
  for (int64_t i = 0; i < spec.n_requests; ++i) {
    ServeRequest& r = requests[static_cast<std::size_t>(i)];
    r.id = i;
    r.arrived_at_s = t;
    r.prompt_tokens = prompt_len.draw(prompts);
    r.output_tokens = output_len.draw(outputs);
    const double gap = spec.arrivals == Arrivals::poisson ? -std::log(gaps.uniform_open()) / spec.rate_per_s
                                                          : gaps.gamma(shape) / (shape * spec.rate_per_s);
    t += gap;
  }
  return requests;
}

namespace {

/// Splits one CSV record into fields (RFC 4180 quoting: "a ""b""" is a "b"); false on an unterminated quote.
bool csv_fields(const std::string& line, std::vector<std::string>& fields) {
  fields.clear();
  std::string field;
  bool quoted = false, was_quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"')
        field += '"', ++i;
      else if (c == '"')
        quoted = false;
      else
        field += c;
    } else if (c == '"' && field.empty() && !was_quoted) {
      quoted = was_quoted = true;
    } else if (c == ',') {
      fields.push_back(field);
      field.clear();
      was_quoted = false;
    } else {
      field += c;
    }
  }
  fields.push_back(field);
  return !quoted;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

}  // namespace

std::vector<ServeRequest> parse_workload_csv(const std::string& text, const std::string& origin) {
  std::stringstream in(text);
  std::string line;
  int64_t line_no = 0;
  std::vector<std::string> fields;
  auto fail = [&](const std::string& what) -> void {
    throw WorkloadError(origin + ":" + std::to_string(line_no) + ": " + what);
  };
  // The header: the first line that is not empty.
  std::vector<std::string> header;
  while (header.empty() && std::getline(in, line)) {
    ++line_no;
    if (trim(line).empty()) continue;
    if (!csv_fields(line, fields)) fail("unterminated quote in the header");
    for (const auto& f : fields) header.push_back(trim(f));
  }
  if (header.empty())
    throw WorkloadError(
        origin +
        ": the workload is empty (expected a header line: arrived_at,num_prefill_tokens,num_decode_tokens[,prompt])");
  auto column = [&](const char* name, bool required) -> int64_t {
    const auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) {
      if (required)
        fail(std::string("the header has no column \"") + name +
             "\" (expected arrived_at, num_prefill_tokens, num_decode_tokens and optionally prompt)");
      return -1;
    }
    return it - header.begin();
  };
  const int64_t arrived = column("arrived_at", true), prefill = column("num_prefill_tokens", true),
                decode = column("num_decode_tokens", true), prompt = column("prompt", false);
  std::vector<ServeRequest> requests;
  while (std::getline(in, line)) {
    ++line_no;
    if (trim(line).empty()) continue;
    if (static_cast<int64_t>(requests.size()) == max_requests)
      fail("more than " + std::to_string(max_requests) + " requests");
    if (!csv_fields(line, fields)) fail("unterminated quote");
    if (fields.size() != header.size())
      fail(std::to_string(fields.size()) + " fields, the header has " + std::to_string(header.size()));
    auto integer = [&](int64_t c) {
      const std::string v = trim(fields[static_cast<std::size_t>(c)]);
      std::size_t used = 0;
      long long n = 0;
      try {
        n = std::stoll(v, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      // Vidur writes counts as floats in some traces ("512.0"): a whole number is accepted.
      if (used != v.size() || used == 0) {
        double d = 0;
        try {
          d = std::stod(v, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != v.size() || d != std::floor(d) || !(std::fabs(d) < 0x1p62))
          fail(header[static_cast<std::size_t>(c)] + " \"" + v + "\" is not a whole number");
        n = static_cast<long long>(d);
      }
      if (n < 1 || n > max_length)
        fail(header[static_cast<std::size_t>(c)] + " must be 1 .. " + std::to_string(max_length) + " (got " + v + ")");
      return static_cast<int64_t>(n);
    };
    ServeRequest r;
    r.id = static_cast<int64_t>(requests.size());
    const std::string at = trim(fields[static_cast<std::size_t>(arrived)]);
    std::size_t used = 0;
    try {
      r.arrived_at_s = std::stod(at, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != at.size() || !std::isfinite(r.arrived_at_s) || r.arrived_at_s < 0 || r.arrived_at_s > 1e9)
      fail("arrived_at \"" + at + "\" is not a time in seconds (0 .. 1e9)");
    r.prompt_tokens = integer(prefill);
    r.output_tokens = integer(decode);
    if (prompt >= 0) {
      std::stringstream ids(fields[static_cast<std::size_t>(prompt)]);
      std::string id;
      while (ids >> id) {
        std::size_t id_used = 0;
        long long v = -1;
        try {
          v = std::stoll(id, &id_used);
        } catch (const std::exception&) {
          id_used = 0;
        }
        if (id_used == 0 || id_used != id.size() || v < 0 || v > std::numeric_limits<int32_t>::max())
          fail("prompt: \"" + id + "\" is not a token id (expected integers >= 0 separated by spaces)");
        r.prompt.push_back(static_cast<int32_t>(v));
      }
      if (static_cast<int64_t>(r.prompt.size()) != r.prompt_tokens)
        fail("the prompt has " + std::to_string(r.prompt.size()) + " tokens but num_prefill_tokens is " +
             std::to_string(r.prompt_tokens));
    }
    requests.push_back(std::move(r));
  }
  if (requests.empty()) throw WorkloadError(origin + ": the workload has a header but no request");
  return requests;
}

}  // namespace lpurt::partition
