#include "jobs/calibrate.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "chip/error.hpp"
#include "chip/model_config.hpp"
#include "chip/toml_file.hpp"
#include "io/text_file.hpp"
#include "partition/plan.hpp"
#include "partition/timing.hpp"

namespace lpurt::jobs {

namespace {

const std::set<std::string>& known_metrics() {
  static const std::set<std::string> metrics = {"tokens_per_s_user", "tokens_per_s_system", "ttft_s", "tpot_s"};
  return metrics;
}

const std::set<std::string>& figure_keys() {
  static const std::set<std::string> keys = {
      "name",   "model", "metric", "chips",     "tp",        "pp",   "context", "prompt_tokens", "output_tokens",
      "batch",  "published", "published_range", "band", "fit", "source"};
  return keys;
}

/// Reads the figure tables' keys with their types, naming file, line and key in every error.
class FigureReader {
 public:
  FigureReader(const toml::table& table, std::string origin) : table_(table), origin_(std::move(origin)) {}

  std::string text(const char* key) const {
    const auto v = node(key, true)->value<std::string>();
    if (!v || v->empty()) throw type_error(key, "a non-empty string");
    return *v;
  }
  int64_t count(const char* key, int64_t fallback, int64_t min_value) const {
    const toml::node* n = node(key, false);
    if (n == nullptr) return fallback;
    const auto v = n->value_exact<int64_t>();
    if (!v || *v < min_value) throw type_error(key, "an integer >= " + std::to_string(min_value));
    return *v;
  }
  double number(const char* key) const {
    const auto v = node(key, true)->value<double>();
    if (!v || !std::isfinite(*v) || *v <= 0) throw type_error(key, "a finite number > 0");
    return *v;
  }
  bool flag(const char* key) const {
    const auto v = node(key, true)->value_exact<bool>();
    if (!v) throw type_error(key, "true or false");
    return *v;
  }
  /// [low, high] when given, else {value, value}.
  std::pair<double, double> range(const char* key, double value) const {
    const toml::node* n = node(key, false);
    if (n == nullptr) return {value, value};
    const toml::array* a = n->as_array();
    const auto low = a && a->size() == 2 ? (*a)[0].value<double>() : std::nullopt;
    const auto high = a && a->size() == 2 ? (*a)[1].value<double>() : std::nullopt;
    if (!low || !high || !(*low > 0) || !(*low <= value) || !(value <= *high) || !std::isfinite(*high))
      throw type_error(key, "[low, high] with 0 < low <= published <= high");
    return {*low, *high};
  }
  void check_keys() const {
    for (const auto& [key, value] : table_)
      if (figure_keys().count(std::string(key.str())) == 0)
        throw chip::InputError(origin_ + ": unknown key \"" + std::string(key.str()) + "\" in a [[figure]]");
  }
  const std::string& origin() const { return origin_; }

 private:
  const toml::node* node(const char* key, bool required) const {
    const toml::node* n = table_.get(key);
    if (n == nullptr && required) throw chip::InputError(origin_ + ": [[figure]] has no \"" + key + "\"");
    return n;
  }
  chip::InputError type_error(const char* key, const std::string& expected) const {
    return chip::InputError(origin_ + ": " + key + " must be " + expected);
  }

  const toml::table& table_;
  std::string origin_;
};

/// Golden-section search for the minimum of `cost` over [low, high] on a log scale; an integral
/// parameter ends with every integer left in the bracket tried (ties to the smaller value).
double minimise(const std::function<double(double)>& cost, double low, double high, bool integral) {
  const double inv_phi = (std::sqrt(5.0) - 1.0) / 2.0;
  auto value_at = [&](double log_value) {
    const double v = std::exp(log_value);
    return integral ? std::clamp(std::round(v), low, high) : v;
  };
  double a = std::log(low), b = std::log(high);
  auto narrow_enough = [&] { return integral ? value_at(b) - value_at(a) <= 4 : b - a <= 1e-5; };
  while (!narrow_enough()) {
    const double c = b - inv_phi * (b - a), d = a + inv_phi * (b - a);
    if (cost(value_at(c)) <= cost(value_at(d)))
      b = d;
    else
      a = c;
  }
  // The search never evaluates the bracket's ends; a minimum there (a figure beyond what the bracket
  // allows) must still be found, so the ends are candidates too.
  double best = integral ? value_at(a) : value_at((a + b) / 2);
  if (integral)
    for (double v = value_at(a) + 1; v <= value_at(b); ++v)
      if (cost(v) < cost(best)) best = v;
  for (const double end : {low, high})
    if (cost(end) < cost(best)) best = end;
  return best;
}

}  // namespace

std::vector<PublishedFigure> load_published_figures(const std::string& path) {
  const toml::table root = chip::parse_toml(io::read_text_file(path, "published figures"), path);
  for (const auto& [key, value] : root)
    if (key.str() != "figure")
      throw chip::InputError(chip::toml_origin(value, path) + ": unknown key \"" + std::string(key.str()) +
                       "\" (a published-figures file holds [[figure]] tables)");
  const toml::array* tables = root["figure"].as_array();
  if (tables == nullptr || tables->empty()) throw chip::InputError(path + ": no [[figure]] tables");
  std::vector<PublishedFigure> figures;
  for (const toml::node& node : *tables) {
    const toml::table* table = node.as_table();
    if (table == nullptr) throw chip::InputError(chip::toml_origin(node, path) + ": figure must be a [[figure]] table");
    const FigureReader r(*table, chip::toml_origin(node, path));
    r.check_keys();
    PublishedFigure f;
    f.origin = r.origin();
    f.name = r.text("name");
    f.model = r.text("model");
    try {
      chip::model_preset(f.model);
    } catch (const chip::ConfigError& e) {
      throw chip::InputError(f.origin + ": model: " + e.what());
    }
    f.metric = r.text("metric");
    if (known_metrics().count(f.metric) == 0)
      throw chip::InputError(f.origin + ": metric \"" + f.metric +
                       "\" is not one of tokens_per_s_user, tokens_per_s_system, ttft_s, tpot_s");
    f.chips = r.count("chips", 0, 1);
    if (f.chips == 0) throw chip::InputError(f.origin + ": [[figure]] has no \"chips\"");
    f.tp = r.count("tp", 0, 1);
    f.pp = r.count("pp", 0, 1);
    f.context = r.count("context", 0, 1);
    f.prompt_tokens = r.count("prompt_tokens", 1, 1);
    f.output_tokens = r.count("output_tokens", 1, 1);
    f.batch = r.count("batch", 1, 1);
    f.published = r.number("published");
    std::tie(f.published_low, f.published_high) = r.range("published_range", f.published);
    f.band = r.number("band");
    if (f.band >= 1) throw chip::InputError(f.origin + ": band must be below 1 (a fraction of the published value)");
    f.fit = r.flag("fit");
    f.source = r.text("source");
    figures.push_back(std::move(f));
  }
  return figures;
}

double predict_figure(const PublishedFigure& f, const chip::ChipSpec& hardware) {
  partition::PlanRequest request;
  request.n_chips = f.chips;
  request.tp = f.tp;
  request.pp = f.pp;
  request.context = f.context;
  request.batch = f.batch;
  request.prompt_tokens = f.prompt_tokens;
  request.output_tokens = f.output_tokens;
  const partition::Plan plan = partition::make_plan(chip::model_preset(f.model), hardware, request);
  const partition::ModelledTimes m = partition::modelled_times(plan, f.prompt_tokens, f.output_tokens);
  if (f.metric == "tokens_per_s_user") return m.tokens_per_s_user;
  if (f.metric == "tokens_per_s_system") return m.tokens_per_s_system;
  if (f.metric == "ttft_s") return m.ttft_s;
  return m.tpot_s;
}

Calibration calibrate(const std::vector<PublishedFigure>& figures, const chip::ChipSpec& base,
                      const std::function<void(const std::string&, double, double)>& progress) {
  Calibration c;
  c.base = base;
  c.fitted = base;
  std::vector<const PublishedFigure*> fitted_figures;
  for (const auto& f : figures)
    if (f.fit) fitted_figures.push_back(&f);
  if (fitted_figures.empty()) throw chip::ConfigError("calibrate: no figure has fit = true; nothing to fit to");

  for (const chip::UncertainParameter& u : chip::uncertain_parameters())
    c.parameters.push_back({u, chip::get_parameter(base, u.name), chip::get_parameter(base, u.name)});
  const std::vector<chip::ParameterInfo>& infos = chip::parameter_infos();
  auto integral = [&](const std::string& name) {
    const auto it = std::find_if(infos.begin(), infos.end(), [&](const chip::ParameterInfo& p) { return p.name == name; });
    return it != infos.end() && it->integral;
  };
  // Coordinate descent: with one parameter one pass is the fit; with two, passes until neither moves.
  const int passes = c.parameters.size() > 1 ? 4 : 1;
  for (int pass = 0; pass < passes; ++pass) {
    bool moved = false;
    for (FittedParameter& p : c.parameters) {
      std::map<double, double> memo;  // value -> cost: golden section revisits its inner points
      auto cost = [&](double value) {
        const auto hit = memo.find(value);
        if (hit != memo.end()) return hit->second;
        chip::ChipSpec trial = c.fitted;
        chip::set_parameter(trial, p.declared.name, value, "calibrate");
        double sum = 0;
        for (const PublishedFigure* f : fitted_figures) {
          const double residual = std::log(predict_figure(*f, trial) / f->published);
          sum += residual * residual;
        }
        ++c.evaluations;
        if (progress) progress(p.declared.name, value, sum);
        return memo[value] = sum;
      };
      const double best = minimise(cost, p.declared.min_value, p.declared.max_value, integral(p.declared.name));
      moved = moved || best != p.fitted_value;
      p.fitted_value = best;
      chip::set_parameter(c.fitted, p.declared.name, best, "calibrate");
    }
    if (!moved) break;
  }
  for (const auto& f : figures) c.figures.push_back({f, predict_figure(f, c.base), predict_figure(f, c.fitted)});
  return c;
}

}  // namespace lpurt::jobs
