#include "chip/hardware.hpp"

#include <cmath>
#include <functional>
#include <optional>
#include <sstream>

#include "chip/error.hpp"
#include "chip/toml_file.hpp"

namespace lpurt::chip {

namespace {

struct Parameter {
  ParameterInfo info;
  std::function<double(const ChipSpec&)> get;
  std::function<void(ChipSpec&, double)> set;
  double min_value;
  double max_value;
};

template <typename T>
Parameter make_parameter(const char* name, const char* unit, const char* source, T ChipSpec::*member,
                         double min_value, double max_value) {
  return Parameter{{name, unit, source, std::is_integral_v<T>},
                   [member](const ChipSpec& s) { return static_cast<double>(s.*member); },
                   [member](ChipSpec& s, double v) { s.*member = static_cast<T>(v); },
                   min_value, max_value};
}

const std::vector<Parameter>& parameters() {
  static const std::vector<Parameter> table = {
      make_parameter("clock_hz", "Hz", "lpu-v1-facts §1.1 [P]", &ChipSpec::clock_hz, 1e6, 1e11),
      make_parameter("sram_bytes", "bytes", "lpu-v1-facts §1.1 [P]", &ChipSpec::sram_bytes, 1024, 1e15),
      make_parameter("stream_bytes_per_cycle", "bytes/cycle", "lpu-v1-facts §1.2, §6.1 [D]",
                     &ChipSpec::stream_bytes_per_cycle, 1, 1e9),
      make_parameter("weight_bytes_per_cycle", "bytes/cycle",
                     "uncertain, fitted by lpurt calibrate in 1,280 .. 20,480 (lpu-v1-facts §1.1-1.2, §6.1 [D, U])",
                     &ChipSpec::weight_bytes_per_cycle, 1, 1e9),
      make_parameter("mxm_macs_per_cycle", "MAC/cycle", "lpu-v1-facts §1.1 [D]", &ChipSpec::mxm_macs_per_cycle, 1,
                     1e12),
      make_parameter("vector_ops_per_cycle", "op/cycle", "lpu-v1-facts §1.1 [S]", &ChipSpec::vector_ops_per_cycle, 1,
                     1e12),
      make_parameter("op_latency_cycles", "cycles", "lpu-v1-facts §1.2 [U]", &ChipSpec::op_latency_cycles, 0, 1e9),
      make_parameter("vector_bytes", "bytes", "lpu-v1-facts §1.2 [S]", &ChipSpec::vector_bytes, 1, 1e9),
      make_parameter("program_reserve_bytes", "bytes", "assumption: 2 MEM slices, lpu-v1-facts §1.2 [U]",
                     &ChipSpec::program_reserve_bytes, 0, 1e15),
      make_parameter("kv_bytes_per_value", "bytes", "lpu-v1-facts §6.2 (FP16 KV cache) [D]", &ChipSpec::kv_bytes_per_value,
                     1, 8),
      make_parameter("activation_bytes_per_value", "bytes", "lpu-v1-facts §6.3 (FP16 activations on the links) [D]",
                     &ChipSpec::activation_bytes_per_value, 1, 8),
      make_parameter("link_bytes_per_s", "bytes/s", "lpu-v1-facts §1.3 [S]", &ChipSpec::link_bytes_per_s, 1e3, 1e15),
      make_parameter("hop_latency_ns", "ns", "lpu-v1-facts §1.3 [S]", &ChipSpec::hop_latency_ns, 0, 1e9),
      make_parameter("power_active_w", "W", "lpu-v1-facts §1.1: GroqCard maximum [S, U]", &ChipSpec::power_active_w, 0,
                     1e6),
      make_parameter("power_idle_w", "W", "assumption: a third of the maximum, no public figure [U]",
                     &ChipSpec::power_idle_w, 0, 1e6),
      make_parameter("power_overhead_w", "W", "lpu-v1-facts §1.1: SHIP's 388 W per LPU less the chip's 300 W [D]",
                     &ChipSpec::power_overhead_w, 0, 1e6),
  };
  return table;
}

/// Speed and bandwidth factors: a slower or faster part, within two orders of magnitude of nominal.
constexpr double min_factor = 0.01, max_factor = 100;
const char* const chip_factor_prefix = "chip_speed_factor.";
const char* const link_factor_prefix = "link_bandwidth_factor.";

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

/// "17" -> 17; "" or anything but decimal digits -> -1.
int64_t parse_index(const std::string& text) {
  if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(text);
}

/// `chip_speed_factor.N` -> N, or `link_bandwidth_factor.A-B` -> {min, max}; throws naming the form.
int64_t chip_of(const std::string& name, const std::string& origin) {
  const int64_t chip = parse_index(name.substr(std::string(chip_factor_prefix).size()));
  if (chip < 0) throw ConfigError(origin + ": expected chip_speed_factor.<chip>, e.g. chip_speed_factor.17, got " + name);
  return chip;
}
std::pair<int64_t, int64_t> link_of(const std::string& name, const std::string& origin) {
  const std::string pair = name.substr(std::string(link_factor_prefix).size());
  const auto dash = pair.find('-');
  const int64_t a = dash == std::string::npos ? -1 : parse_index(pair.substr(0, dash));
  const int64_t b = dash == std::string::npos ? -1 : parse_index(pair.substr(dash + 1));
  if (a < 0 || b < 0 || a == b)
    throw ConfigError(origin + ": expected link_bandwidth_factor.<chip>-<chip> of two different chips, e.g. "
                      "link_bandwidth_factor.3-11, got " + name);
  return {std::min(a, b), std::max(a, b)};
}

void check_factor(double value, const std::string& name, const std::string& origin) {
  if (!(value >= min_factor && value <= max_factor))
    throw ConfigError(origin + ": " + name + " = " + format_number(value) + " is outside " + format_number(min_factor) +
                      " .. " + format_number(max_factor) + " (1 is nominal)");
}

/// "clock_hz, sram_bytes, ...": the names of parameters().
std::string parameter_list() {
  std::string names;
  for (const auto& p : parameters()) names += (names.empty() ? "" : ", ") + p.info.name;
  return names;
}

const Parameter& find_parameter(const std::string& name, const std::string& origin) {
  check_not_removed(name, origin);
  for (const auto& p : parameters())
    if (p.info.name == name) return p;
  throw ConfigError(origin + ": unknown hardware parameter \"" + name + "\" (known: " + parameter_list() + ")");
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

double parse_number(const std::string& text, const std::string& what) {
  // TOML allows '_' as a digit separator; accept it so that 230_686_720 reads naturally.
  std::string digits;
  for (char ch : text)
    if (ch != '_') digits += ch;
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(digits, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != digits.size() || !std::isfinite(value))
    throw ConfigError(what + ": expected a number, got \"" + text + "\"");
  return value;
}

}  // namespace

void ChipSpec::validate() const {
  for (const auto& p : parameters()) {
    const double v = p.get(*this);
    if (!(v >= p.min_value && v <= p.max_value))
      throw ConfigError("hardware parameter " + p.info.name + " = " + format_number(v) + " is outside " +
                        format_number(p.min_value) + " .. " + format_number(p.max_value) + " " + p.info.unit);
  }
  for (const auto& [chip, f] : chip_speed_factors) check_factor(f, chip_factor_prefix + std::to_string(chip), "hardware");
  for (const auto& [link, f] : link_bandwidth_factors)
    check_factor(f, link_factor_prefix + std::to_string(link.first) + "-" + std::to_string(link.second), "hardware");
  if (power_idle_w > power_active_w)
    throw ConfigError("power_idle_w (" + format_number(power_idle_w) + " W) must not exceed power_active_w (" +
                      format_number(power_active_w) + " W)");
  if (program_reserve_bytes >= sram_bytes)
    throw ConfigError("program_reserve_bytes (" + std::to_string(program_reserve_bytes) +
                      ") must be smaller than sram_bytes (" + std::to_string(sram_bytes) + ")");
}

ChipSpec hardware_preset(const std::string& name) {
  if (name == "groq-lpu-v1") return ChipSpec{};
  if (name == "groq-lpu-v1-datasheet") {
    ChipSpec s;
    s.name = name;
    s.weight_bytes_per_cycle = s.stream_bytes_per_cycle;
    return s;
  }
  throw ConfigError("unknown system preset \"" + name + "\" (known: groq-lpu-v1, groq-lpu-v1-datasheet)");
}

std::vector<std::string> hardware_preset_names() { return {"groq-lpu-v1", "groq-lpu-v1-datasheet"}; }

const std::vector<UncertainParameter>& uncertain_parameters() {
  static const std::vector<UncertainParameter> table = {
      {"weight_bytes_per_cycle", 4 * 320, 64 * 320,
       "low: the MXM installs weights through its 4 planes, one 320-byte vector each per cycle (lpu-v1-facts "
       "§1.1-1.2 [D, U]); high: the 64 x 320-byte stream rate, 18.4 TB/s at 900 MHz (§6.1 [D])"},
  };
  return table;
}

bool is_hardware_preset(const std::string& name) {
  const auto names = hardware_preset_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

const std::vector<ParameterInfo>& parameter_infos() {
  static const std::vector<ParameterInfo> infos = [] {
    std::vector<ParameterInfo> v;
    for (const auto& p : parameters()) v.push_back(p.info);
    return v;
  }();
  return infos;
}

namespace {
bool is_removed(const std::string& name) { return name == "local_links" || name == "global_links"; }
}  // namespace

void check_not_removed(const std::string& name, const std::string& origin) {
  if (is_removed(name))
    throw ConfigError(origin + ": hardware parameter \"" + name + "\" was removed: it changed no modelled figure "
                      "(the topology fixes each chip's links, see partition/topology.hpp); delete the setting");
}

bool is_parameter_name(const std::string& name) {
  if (name == "topology" || is_removed(name) || starts_with(name, chip_factor_prefix) || starts_with(name, link_factor_prefix)) return true;
  for (const auto& p : parameters())
    if (p.info.name == name) return true;
  return false;
}

double get_parameter(const ChipSpec& spec, const std::string& name) {
  if (starts_with(name, chip_factor_prefix)) return spec.chip_speed(chip_of(name, "get_parameter"));
  if (starts_with(name, link_factor_prefix)) {
    const auto link = link_of(name, "get_parameter");
    return spec.link_bandwidth(link.first, link.second);
  }
  return find_parameter(name, "get_parameter").get(spec);
}

void set_parameter(ChipSpec& spec, const std::string& name, double value, const std::string& origin) {
  if (starts_with(name, chip_factor_prefix)) {
    const int64_t chip = chip_of(name, origin);
    check_factor(value, name, origin);
    spec.chip_speed_factors[chip] = value;
    return;
  }
  if (starts_with(name, link_factor_prefix)) {
    const auto link = link_of(name, origin);
    check_factor(value, name, origin);
    spec.link_bandwidth_factors[link] = value;
    return;
  }
  const Parameter& p = find_parameter(name, origin);
  if (p.info.integral && value != std::floor(value))
    throw ConfigError(origin + ": " + name + " must be a whole number, got " + format_number(value));
  if (!(value >= p.min_value && value <= p.max_value))
    throw ConfigError(origin + ": " + name + " = " + format_number(value) + " is outside " +
                      format_number(p.min_value) + " .. " + format_number(p.max_value) + " " + p.info.unit);
  p.set(spec, value);
}

namespace {
std::string unquote(const std::string& v) {
  return v.size() >= 2 && v.front() == '"' && v.back() == '"' ? v.substr(1, v.size() - 2) : v;
}
void set_topology(ChipSpec& spec, const std::string& value, const std::string& origin) {
  if (value != "dragonfly" && value != "chain")
    throw ConfigError(origin + ": topology must be \"dragonfly\" or \"chain\", got \"" + value + "\"");
  spec.topology = value;
}
}  // namespace

void apply_assignment(ChipSpec& spec, const std::string& assignment, const std::string& origin) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos)
    throw ConfigError(origin + ": expected name=value, got \"" + assignment + "\"");
  const std::string name = trim(assignment.substr(0, eq));
  if (name == "topology") {
    set_topology(spec, unquote(trim(assignment.substr(eq + 1))), origin);
    return;
  }
  set_parameter(spec, name, parse_number(trim(assignment.substr(eq + 1)), origin + ": " + name), origin);
}

ChipSpec parse_system_file(const std::string& text, const std::string& file_name) {
  const toml::table root = parse_toml(text, file_name);
  const std::vector<TomlEntry> entries = flatten_in_file_order(root);
  ChipSpec spec;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    // Named references, not a structured binding: lambdas may not capture bindings in C++17 (clang refuses).
    const std::string& name = entries[i].name;
    const toml::node* value = entries[i].value;
    const std::string origin = toml_origin(*value, file_name);
    const auto wrong_type = [&](const char* expected) {
      return InputError(origin + ": " + name + " must be " + expected + ", got " + toml_type_name(*value));
    };
    if (name == "preset") {
      if (i != 0) throw InputError(origin + ": preset must come before any parameter");
      const auto preset = value->value<std::string>();
      if (!preset) throw wrong_type("a quoted string such as \"groq-lpu-v1\"");
      spec = hardware_preset(*preset);
    } else if (name == "topology") {
      const auto topology = value->value<std::string>();
      if (!topology) throw wrong_type("a quoted string (\"dragonfly\" or \"chain\")");
      set_topology(spec, *topology, origin);
    } else if (!is_parameter_name(name)) {
      throw InputError(origin + ": unknown hardware parameter \"" + name + "\" (expected preset, topology, " +
                       parameter_list() + ", chip_speed_factor.<chip> or link_bandwidth_factor.<chip>-<chip>)");
    } else {
      const auto number = value->is_integer() || value->is_floating_point() ? value->value<double>() : std::nullopt;
      if (!number) throw wrong_type("a number");
      set_parameter(spec, name, *number, origin);
    }
  }
  spec.validate();
  return spec;
}

}  // namespace lpurt::chip
