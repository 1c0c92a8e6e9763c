#include "jobs/study.hpp"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>

#include "chip/model_config.hpp"
#include "jobs/serve.hpp"
#include "runtime/run.hpp"
#include "chip/toml_file.hpp"
#include "io/text_file.hpp"

namespace lpurt::jobs {

namespace fs = std::filesystem;
using Value = io::Record::Value;
using chip::ConfigError;

namespace {

/// More points than anyone runs on purpose: a typo such as a step of 1 over 1..1e9 fails early.
constexpr std::size_t max_points = 100'000;
/// Part of every point key: bump it whenever modelled results change (timing model, summary fields) or
/// the key's JSON text does (4: nlohmann::json's compact form), so that a rerun does not mix results of
/// two versions. The rank count is not part of the key: results
/// are the same on any number of ranks (host timings aside).
constexpr int64_t point_key_version = 6;

const std::vector<std::string>& hardware_parameter_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& info : chip::parameter_infos()) n.push_back(info.name);
    n.push_back("topology");
    n.push_back("chip_speed_factor.<chip>");
    n.push_back("link_bandwidth_factor.<chip>-<chip>");
    return n;
  }();
  return names;
}

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

/// Reads a job file's values with their origin ("job.toml:12: run.chips") in every message. A value of
/// the wrong type or an unknown key is a malformed file (InputError); a value the run cannot take is a
/// ConfigError.
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  std::string at(const toml::node& v) const { return chip::toml_origin(v, source_); }
  std::string at(const toml::node& v, const std::string& key) const { return at(v) + ": " + key; }

  [[noreturn]] void fail(const toml::node& v, const std::string& key, const std::string& what) const {
    throw ConfigError(at(v, key) + " " + what);
  }
  [[noreturn]] void malformed(const toml::node& v, const std::string& key, const std::string& what) const {
    throw chip::InputError(at(v, key) + " " + what);
  }
  [[noreturn]] void wrong_type(const toml::node& v, const std::string& key, const std::string& expected) const {
    malformed(v, key, "must be " + expected + ", got " + chip::toml_type_name(v));
  }

  /// The table `name` of the root (nullptr if absent), after checking it is a table with only `allowed`
  /// keys (any key if `allowed` is empty).
  const toml::table* section(const toml::table& root, const std::string& name,
                             const std::vector<std::string>& allowed) const {
    const toml::node* t = root.get(name);
    if (!t) return nullptr;
    if (!t->is_table()) wrong_type(*t, name, "a table");
    for (const auto& [key, value] : chip::entries_in_file_order(*t->as_table()))
      if (!allowed.empty() && !contains(allowed, key))
        malformed(*value, name + "." + key, "is not a known key (expected one of: " + join(allowed) + ")");
    return t->as_table();
  }

  std::string string(const toml::node& v, const std::string& key) const {
    if (!v.is_string()) wrong_type(v, key, "a string");
    return v.as_string()->get();
  }
  int64_t integer(const toml::node& v, const std::string& key, int64_t min) const {
    if (!v.is_integer()) wrong_type(v, key, "an integer");
    const int64_t n = v.as_integer()->get();
    if (n < min) fail(v, key, "must be at least " + std::to_string(min) + ", got " + std::to_string(n));
    return n;
  }
  double number(const toml::node& v, const std::string& key, double min) const {
    if (!v.is_number()) wrong_type(v, key, "a number");
    const double x = *v.value<double>();
    if (!(x >= min)) fail(v, key, "must be at least " + format_value(min) + ", got " + format_value(x));
    return x;
  }
  /// A scalar for a run, serving or hardware parameter: integers for run parameters, a string for topology,
  /// numbers for the other hardware parameters, the serving parameters' own kinds.
  Value parameter(const toml::node& v, const std::string& name, const std::string& key) const {
    if (name == "topology") return string(v, key);
    if (is_serve_parameter(name)) {
      switch (serve_parameter_kind(name)) {
        case ServeValueKind::text: return string(v, key);
        case ServeValueKind::integer: return integer(v, key, 0);
        case ServeValueKind::number: return number(v, key, -std::numeric_limits<double>::infinity());
      }
    }
    if (contains(run_parameter_names(), name)) return integer(v, key, 0);
    if (v.is_integer()) return v.as_integer()->get();
    return number(v, key, -std::numeric_limits<double>::infinity());
  }

 private:
  std::string source_;
};

/// A run or hardware parameter's name: in [sweep] and [system.set], nested tables are flattened down to
/// these (`chip_speed_factor.3 = ...` reads as a table `chip_speed_factor`), and a table so named is a
/// range.
bool is_parameter(const std::string& name) {
  return contains(run_parameter_names(), name) || chip::is_parameter_name(name) || is_serve_parameter(name);
}

std::string resolve_path(const std::string& path, const fs::path& base) {
  const fs::path p(path);
  return (p.is_absolute() ? p : base / p).lexically_normal().string();
}

/// `{ from = 72, to = 4608, times = 2 }` or `{ from = 1, to = 8, step = 1 }`: the values from `from` up
/// to at most `to`.
/// `integers`: the values are integers when from and the factor or step were written as integers.
std::vector<Value> range_values(double from, double to, double times, double step, bool integers,
                                const std::string& origin) {
  if (!(from > 0 || step > 0) || to < from || (times > 0) == (step > 0) || (times > 0 && times <= 1))
    throw ConfigError(origin + ": a range needs from <= to and either times > 1 (with from > 0) or step > 0");
  std::vector<Value> values;
  for (double x = from; x <= to * (1 + 1e-12); x = times > 0 ? x * times : x + step) {
    if (values.size() == max_points)
      throw ConfigError(origin + ": the range has more than " + std::to_string(max_points) + " values");
    if (integers && x >= 0x1p62)
      throw ConfigError(origin + ": the range reaches " + format_value(x) + ", beyond the integers a parameter can take");
    if (integers) values.emplace_back(static_cast<int64_t>(x));
    else values.emplace_back(x);
  }
  return values;
}

std::string hex64(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, h);
  return buf;
}

uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 14695981039346656037ull;
  for (const unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return h;
}

/// A TOML string literal (toml++ writes the escapes).
std::string toml_string(const std::string& text) {
  std::ostringstream out;
  out << toml::value<std::string>(text);
  return out.str();
}

std::string toml_value(const Value& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) {
    if (std::isnan(*d)) return "nan";
    if (std::isinf(*d)) return *d > 0 ? "inf" : "-inf";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", *d);
    std::string s = buf;
    if (s.find_first_of(".en") == std::string::npos) s += ".0";  // stays a float when read back
    return s;
  }
  return toml_string(std::get<std::string>(v));
}

/// A key as TOML writes it: bare if it can be, else quoted (`"chip_speed_factor.100"`: a bare dotted key
/// would be a table).
std::string toml_key(const std::string& key) {
  const bool bare = !key.empty() && key.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                          "0123456789_-") == std::string::npos;
  return bare ? key : toml_string(key);
}

void apply_hardware(chip::ChipSpec& spec, const std::string& name, const Value& value, const std::string& origin) {
  if (const auto* s = std::get_if<std::string>(&value)) {
    if (name != "topology") throw ConfigError(origin + ": " + name + " must be a number, got \"" + *s + "\"");
    chip::apply_assignment(spec, name + "=" + *s, origin);
    return;
  }
  if (name == "topology") throw ConfigError(origin + ": topology must be a string (\"dragonfly\" or \"chain\")");
  const double x = std::holds_alternative<int64_t>(value) ? static_cast<double>(std::get<int64_t>(value))
                                                          : std::get<double>(value);
  chip::set_parameter(spec, name, x, origin);
}

void apply_run(Point& p, const std::string& name, const Value& value, const std::string& origin) {
  const auto* n = std::get_if<int64_t>(&value);
  if (!n) throw ConfigError(origin + ": " + name + " must be an integer, got " + format_value(value));
  // One rule with the command line: a value given must be at least 1; left out, tp, pp, replicas and
  // context are the planner's or the model's choice. Upper limits are partition::check_request's.
  if (*n < 1) throw ConfigError(origin + ": " + name + " must be at least 1, got " + std::to_string(*n));
  auto& r = p.request;
  if (name == "chips") r.n_chips = *n;
  else if (name == "tp") r.tp = *n;
  else if (name == "pp") r.pp = *n;
  else if (name == "replicas") r.replicas = *n;
  else if (name == "batch") r.batch = *n;
  else if (name == "context") r.context = *n;
  else if (name == "block_tokens") r.block_tokens = *n;
  else if (name == "prompt_len") p.prompt_len = *n;
  else if (name == "tokens") p.tokens = *n;
}

}  // namespace

const std::vector<std::string>& run_parameter_names() {
  static const std::vector<std::string> names = {"chips",   "tp",      "pp",           "replicas",   "batch",
                                                 "context", "block_tokens", "prompt_len", "tokens"};
  return names;
}

std::string format_value(const Value& value) {
  if (const auto* i = std::get_if<int64_t>(&value)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&value)) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", *d);
    return buf;
  }
  return std::get<std::string>(value);
}

Value parse_scalar(const std::string& text) {
  std::size_t used = 0;
  try {
    const long long i = std::stoll(text, &used);
    if (used == text.size()) return static_cast<int64_t>(i);
  } catch (const std::exception&) {
  }
  try {
    const double d = std::stod(text, &used);
    if (used == text.size()) return d;
  } catch (const std::exception&) {
  }
  return text;
}

Axis parse_axis_flag(const std::string& text) {
  const std::string origin = "--sweep " + text;
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size())
    throw ConfigError(origin + ": expected name=v1,v2,... or name=from..to*times or name=from..to+step");
  Axis axis{text.substr(0, eq), {}, "--sweep"};
  const std::string list = text.substr(eq + 1);
  if (const auto dots = list.find(".."); dots != std::string::npos) {
    const auto op = list.find_first_of("*+", dots);
    if (op == std::string::npos) throw ConfigError(origin + ": a range needs *times or +step, e.g. 72..4608*2");
    const Value from = parse_scalar(list.substr(0, dots)), to = parse_scalar(list.substr(dots + 2, op - dots - 2)),
                by = parse_scalar(list.substr(op + 1));
    auto num = [&](const Value& v) {
      if (std::holds_alternative<std::string>(v)) throw ConfigError(origin + ": the range's bounds must be numbers");
      return std::holds_alternative<int64_t>(v) ? static_cast<double>(std::get<int64_t>(v)) : std::get<double>(v);
    };
    const bool integers = std::holds_alternative<int64_t>(from) && std::holds_alternative<int64_t>(by);
    axis.values = range_values(num(from), num(to), list[op] == '*' ? num(by) : 0, list[op] == '+' ? num(by) : 0,
                               integers, origin);
    return axis;
  }
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) throw ConfigError(origin + ": empty value in the list");
    axis.values.push_back(parse_scalar(item));
  }
  return axis;
}

Study parse_study(const std::string& text, const std::string& path) {
  const toml::table root = chip::parse_toml(text, path);
  const Reader in(path);
  const fs::path base = fs::absolute(fs::path(path)).parent_path();
  for (const auto& [key, value] : chip::entries_in_file_order(root))
    if (!contains({"study", "model", "system", "run", "serve", "sweep"}, key))
      in.malformed(*value, key, "is not a known section (expected study, model, system, run, serve, sweep)");

  Study s;
  s.source = path;
  s.name = fs::path(path).stem().string();
  s.output_dir = resolve_path(s.name, base);
  if (const auto* t = in.section(root, "study", {"name", "output", "mode", "ranks", "throttle", "step_timeout_s"})) {
    if (const auto* v = t->get("name")) s.name = in.string(*v, "study.name");
    if (const auto* v = t->get("output")) s.output_dir = resolve_path(in.string(*v, "study.output"), base);
    else s.output_dir = resolve_path(s.name, base);
    if (const auto* v = t->get("mode")) {
      const std::string mode = in.string(*v, "study.mode");
      if (mode != "timing-only" && mode != "functional")
        in.fail(*v, "study.mode", "must be \"timing-only\" or \"functional\", got \"" + mode + "\"");
      s.timing_only = mode == "timing-only";
    }
    if (const auto* v = t->get("ranks")) s.ranks = in.integer(*v, "study.ranks", 1);
    if (const auto* v = t->get("throttle")) s.throttle = in.integer(*v, "study.throttle", 0);
    if (const auto* v = t->get("step_timeout_s")) {
      s.step_timeout_s = in.number(*v, "study.step_timeout_s", 0);
      if (!(s.step_timeout_s <= runtime::max_step_timeout_s))  // inf would never time out
        in.fail(*v, "study.step_timeout_s", "must be at most " + format_value(runtime::max_step_timeout_s) +
                                                " (0: wait forever), got " + format_value(s.step_timeout_s));
    }
  }
  check_study_name(s.name, path + ": study.name");

  const auto* model = in.section(root, "model", {"file", "preset", "seed"});
  if (!model) throw chip::InputError(path + ": a [model] section with file = \"...\" or preset = \"...\" is required");
  const auto* file = model->get("file");
  const auto* preset = model->get("preset");
  if ((file != nullptr) == (preset != nullptr))
    in.fail(*model, "model", "needs exactly one of file = \"model.h5\" or preset = \"name\"");
  if (file) s.model_file = resolve_path(in.string(*file, "model.file"), base);
  if (preset) {
    s.model_preset = in.string(*preset, "model.preset");
    const auto names = chip::model_preset_names();
    if (!contains(names, s.model_preset))
      in.fail(*preset, "model.preset", "\"" + s.model_preset + "\" is not a preset (expected one of: " + join(names) + ")");
  }
  if (const auto* v = model->get("seed")) {
    if (file) in.fail(*v, "model.seed", "applies to a preset only (a model file holds its weights)");
    s.seed = static_cast<uint64_t>(in.integer(*v, "model.seed", 0));
  }

  if (const auto* t = in.section(root, "system", {"preset", "file", "set"})) {
    const auto* sp = t->get("preset");
    const auto* sf = t->get("file");
    if (sp && sf) in.fail(*sf, "system.file", "and system.preset are exclusive");
    if (sp) {
      s.system = in.string(*sp, "system.preset");
      if (!chip::is_hardware_preset(s.system))
        in.fail(*sp, "system.preset", "\"" + s.system + "\" is not a system preset (expected one of: " +
                                          join(chip::hardware_preset_names()) + ")");
    }
    if (sf) s.system = resolve_path(in.string(*sf, "system.file"), base);
    if (const auto* set = t->get("set")) {
      if (!set->is_table()) in.wrong_type(*set, "system.set", "a table of parameter = value");
      for (const auto& [key, value] : chip::flatten_in_file_order(*set->as_table())) {
        if (!chip::is_parameter_name(key))
          in.malformed(*value, "system.set." + key, "is not a hardware parameter (expected one of: " +
                                                        join(hardware_parameter_names()) + ")");
        s.system_set.emplace_back(key, in.parameter(*value, key, "system.set." + key));
      }
    }
  }

  if (const auto* t = in.section(root, "run", run_parameter_names()))
    for (const auto& [key, value] : chip::entries_in_file_order(*t)) s.run.set(key, in.integer(*value, "run." + key, 0));

  if (const auto* t = in.section(root, "serve", serve_parameter_names())) {
    s.serving = true;
    for (const auto& [key, value] : chip::entries_in_file_order(*t)) {
      Value v = in.parameter(*value, key, "serve." + key);
      if (key == "workload") v = resolve_path(std::get<std::string>(v), base);
      s.serve.set(key, v);
    }
  }

  if (const auto* t = in.section(root, "sweep", {})) {
    // File order, not toml++'s sorted order: the first axis varies slowest, as the user's nested loops.
    for (const auto& [key, value] : chip::flatten_in_file_order(*t, is_parameter)) {
      const std::string where = "sweep." + key;
      if (!is_parameter(key))
        in.malformed(*value, where, "is not a run, serving or hardware parameter (run: " + join(run_parameter_names()) +
                                        "; serving: " + join(serve_parameter_names()) +
                                        "; hardware: " + join(hardware_parameter_names()) + ")");
      if (s.run.find(key)) in.fail(*value, where, "is also fixed in [run]; give it in one place");
      if (s.serve.find(key)) in.fail(*value, where, "is also fixed in [serve]; give it in one place");
      if (is_serve_parameter(key) && !s.serving)
        in.fail(*value, where, "is a serving parameter: a serving study has a [serve] section (rate and requests, or a workload)");
      for (const auto& [name, unused] : s.system_set)
        if (name == key) in.fail(*value, where, "is also fixed in [system.set]; give it in one place");
      Axis axis{key, {}, in.at(*value)};
      if (const toml::array* list = value->as_array()) {
        if (list->empty()) in.fail(*value, where, "is an empty list");
        for (const auto& element : *list) {
          Value v = in.parameter(element, key, where);
          if (key == "workload") v = resolve_path(std::get<std::string>(v), base);
          axis.values.push_back(v);
        }
      } else if (const toml::table* range = value->as_table()) {
        double from = 0, to = 0, times = 0, step = 0;
        bool integers = true;
        for (const auto& [rk, rv] : chip::entries_in_file_order(*range)) {
          if (rk != "to") integers = integers && rv->is_integer();
          if (rk == "from") from = in.number(*rv, where + ".from", -std::numeric_limits<double>::infinity());
          else if (rk == "to") to = in.number(*rv, where + ".to", -std::numeric_limits<double>::infinity());
          else if (rk == "times") times = in.number(*rv, where + ".times", 0);
          else if (rk == "step") step = in.number(*rv, where + ".step", 0);
          else in.malformed(*rv, where + "." + rk, "is not a range key (expected from, to and times or step)");
        }
        axis.values = range_values(from, to, times, step, integers, in.at(*value, where));
      } else {
        in.wrong_type(*value, where, "a list of values or a range { from, to, times|step }");
      }
      s.axes.push_back(std::move(axis));
    }
  }
  if (!s.run.find("chips") &&
      std::none_of(s.axes.begin(), s.axes.end(), [](const Axis& a) { return a.name == "chips"; }))
    throw ConfigError(path + ": the chip count is missing: give run.chips or sweep.chips");
  expand(s);  // every impossible value fails now, naming its key and line, before anything runs
  return s;
}

void check_study_name(const std::string& name, const std::string& origin) {
  if (name.empty() || name.find_first_of("\n\r\"") != std::string::npos)
    throw ConfigError(origin + " must be a non-empty single-line name without quotes");
  // The name is the default output folder, inside the job file's folder: a separator or a dot folder
  // would put the study somewhere else (name = "../../evil").
  if (name.find_first_of("/\\") != std::string::npos || name == "." || name.find("..") != std::string::npos)
    throw ConfigError(origin + " \"" + name + "\" must be a plain name without '/', '\\' or '..' (it names the "
                      "study's folder; give study.output or --out to write elsewhere)");
}

void check_axes(const Study& s) {
  for (std::size_t a = 0; a < s.axes.size(); ++a) {
    const std::string& name = s.axes[a].name;
    for (std::size_t b = 0; b < a; ++b)
      if (s.axes[b].name == name) throw ConfigError(s.axes[a].origin + " " + name + ": swept twice");
    if (s.run.find(name) || s.serve.find(name))
      throw ConfigError(s.axes[a].origin + " " + name + ": both swept and fixed; give it in one place");
    if (is_serve_parameter(name) && !s.serving)
      throw ConfigError(s.axes[a].origin + " " + name + ": a serving parameter; a serving study needs --serve rate=R --serve requests=K (or --serve workload=FILE)");
    for (const auto& [fixed, unused] : s.system_set)
      if (fixed == name) throw ConfigError(s.axes[a].origin + " " + name + ": both swept and set; give it in one place");
  }
}

chip::ChipSpec load_system(const std::string& system) {
  if (chip::is_hardware_preset(system)) return chip::hardware_preset(system);
  std::error_code ec;
  if (!fs::exists(system, ec))
    throw ConfigError("unknown system preset \"" + system + "\" and no such file (presets: " +
                      join(chip::hardware_preset_names()) + ")");
  chip::ChipSpec spec = chip::parse_system_file(io::read_text_file(system, "system file"), system);
  spec.name = system;
  return spec;
}

Study load_study(const std::string& path) { return parse_study(io::read_text_file(path, "job file"), path); }

std::vector<Point> expand(const Study& s) {
  std::size_t n = 1;
  for (const auto& axis : s.axes) {
    if (axis.values.empty()) throw ConfigError(axis.origin + ": " + axis.name + " has no values");
    n *= axis.values.size();
    if (n > max_points)
      throw ConfigError(s.source + ": the sweep has more than " + std::to_string(max_points) + " points");
  }
  chip::ChipSpec base = load_system(s.system);
  for (const auto& [name, value] : s.system_set) apply_hardware(base, name, value, s.source + ": system.set." + name);

  std::vector<Point> points(n);
  for (std::size_t i = 0; i < n; ++i) {
    Point& p = points[i];
    p.index = static_cast<int64_t>(i);
    p.hardware = base;
    p.prompt_len = runtime::default_prompt_len;
    p.tokens = runtime::default_output_tokens;
    for (const auto& [name, value] : s.run.fields()) apply_run(p, name, value, s.source + ": run." + name);
    p.serve = s.serve;
    // Row-major: the first axis varies slowest, as in nested loops written in the file's order.
    std::size_t rest = i, stride = n;
    for (const auto& axis : s.axes) {
      stride /= axis.values.size();
      const Value& value = axis.values[rest / stride];
      rest %= stride;
      const std::string origin = axis.origin + ": sweep." + axis.name + " = " + format_value(value);
      if (contains(run_parameter_names(), axis.name)) apply_run(p, axis.name, value, origin);
      else if (is_serve_parameter(axis.name)) p.serve.set(axis.name, value);
      else if (chip::is_parameter_name(axis.name)) apply_hardware(p.hardware, axis.name, value, origin);
      else throw ConfigError(origin + ": " + axis.name + " is not a run or hardware parameter");
      p.swept.emplace_back(axis.name, value);
      p.label += (p.label.empty() ? "" : " ") + axis.name + "=" + format_value(value);
    }
    try {
      p.hardware.validate();
    } catch (const ConfigError& e) {
      throw ConfigError(s.source + ": point " + std::to_string(i) + " (" + p.label + "): " + e.what());
    }
    if (p.label.empty()) p.label = "chips=" + std::to_string(p.request.n_chips);
    if (s.serving) check_serve_parameters(p.serve, s.source + ": point " + std::to_string(i) + " (" + p.label + ")");

    io::Record key;
    key.set("lpurt_point", point_key_version);
    if (s.model_file.empty()) {
      key.set("model_preset", s.model_preset).set("seed", static_cast<int64_t>(s.seed));
    } else {
      key.set("model_file", s.model_file);
      // A model regenerated under the same name is another model: its size and modification time say so.
      std::error_code ec;
      key.set("model_file_bytes", static_cast<int64_t>(fs::file_size(s.model_file, ec)));
      key.set("model_file_mtime_ns", static_cast<int64_t>(fs::last_write_time(s.model_file, ec).time_since_epoch().count()));
    }
    key.set("mode", std::string(s.timing_only ? "timing-only" : "functional"));
    key.set("chips", p.request.n_chips).set("tp", p.request.tp).set("pp", p.request.pp);
    key.set("replicas", p.request.replicas).set("batch", p.request.batch).set("context", p.request.context);
    key.set("block_tokens", p.request.block_tokens).set("prompt_len", p.prompt_len).set("tokens", p.tokens);
    for (const auto& info : chip::parameter_infos()) key.set(info.name, chip::get_parameter(p.hardware, info.name));
    key.set("topology", p.hardware.topology);
    for (const auto& [chip, factor] : p.hardware.chip_speed_factors)
      key.set("chip_speed_factor." + std::to_string(chip), factor);
    for (const auto& [link, factor] : p.hardware.link_bandwidth_factors)
      key.set("link_bandwidth_factor." + std::to_string(link.first) + "-" + std::to_string(link.second), factor);
    if (s.serving) {
      key.set("serve", std::string("lpurt serve"));
      for (const auto& [name, value] : p.serve.fields()) key.set("serve." + name, value);
      if (const auto* trace = p.serve.find("workload")) {
        // A trace rewritten under the same name is another workload.
        std::error_code ec;
        const std::string path = std::get<std::string>(*trace);
        key.set("serve.workload_bytes", static_cast<int64_t>(fs::file_size(path, ec)));
        key.set("serve.workload_mtime_ns", static_cast<int64_t>(fs::last_write_time(path, ec).time_since_epoch().count()));
      }
    }
    p.key = key.to_json();
    p.file = (fs::path(s.output_dir) / "points" / (hex64(fnv1a64(p.key)) + ".h5")).string();
  }
  std::map<std::string, int64_t> seen;
  for (const auto& p : points) {
    const auto [it, fresh] = seen.emplace(p.key, p.index);
    if (!fresh)
      throw ConfigError(s.source + ": points " + std::to_string(it->second) + " and " + std::to_string(p.index) + " (" +
                        p.label + ") are the same run: a swept value is repeated");
  }
  return points;
}

std::string to_toml(const Study& s) {
  std::ostringstream out;
  out << "# Written by lpurt sweep: the study as it ran (paths absolute). `lpurt sweep` reads it back.\n";
  out << "[study]\nname = " << toml_value(s.name) << "\noutput = " << toml_value(s.output_dir)
      << "\nmode = " << toml_value(std::string(s.timing_only ? "timing-only" : "functional")) << "\nranks = " << s.ranks
      << "\nthrottle = " << s.throttle << "\nstep_timeout_s = " << toml_value(s.step_timeout_s) << "\n\n[model]\n";
  if (s.model_file.empty()) out << "preset = " << toml_value(s.model_preset) << "\nseed = " << s.seed << "\n";
  else out << "file = " << toml_value(s.model_file) << "\n";
  out << "\n[system]\n"
      << (chip::is_hardware_preset(s.system) ? "preset = " : "file = ") << toml_value(s.system) << "\n";
  if (!s.system_set.empty()) {
    out << "\n[system.set]\n";
    for (const auto& [name, value] : s.system_set) out << toml_key(name) << " = " << toml_value(value) << "\n";
  }
  if (!s.run.fields().empty()) {
    out << "\n[run]\n";
    for (const auto& [name, value] : s.run.fields()) out << toml_key(name) << " = " << toml_value(value) << "\n";
  }
  if (s.serving) {
    out << "\n[serve]\n";
    for (const auto& [name, value] : s.serve.fields()) out << toml_key(name) << " = " << toml_value(value) << "\n";
  }
  if (!s.axes.empty()) {
    out << "\n[sweep]\n";
    for (const auto& axis : s.axes) {
      out << toml_key(axis.name) << " = [";
      for (std::size_t i = 0; i < axis.values.size(); ++i) out << (i ? ", " : "") << toml_value(axis.values[i]);
      out << "]\n";
    }
  }
  return out.str();
}

}  // namespace lpurt::jobs
