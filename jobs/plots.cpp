#include "jobs/plots.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <sstream>
#include <unordered_map>

#include <unistd.h>

#include "chip/hardware.hpp"
#include "io/atomic_file.hpp"
#include "io/error.hpp"
#include "jobs/process.hpp"

namespace lpurt::jobs {

namespace fs = std::filesystem;

namespace {

constexpr double nan = std::numeric_limits<double>::quiet_NaN();

double number(const io::Record& r, const std::string& name, double scale = 1) {
  const auto* v = r.find(name);
  if (!v) return nan;
  if (const auto* i = std::get_if<int64_t>(v)) return static_cast<double>(*i) * scale;
  if (const auto* d = std::get_if<double>(v)) return *d * scale;
  return nan;
}

/// `x` as printf's %.<digits>g writes it, with no bound on the length.
std::string g(double x, int digits) {
  std::ostringstream out;
  out << std::setprecision(digits) << x;
  return out.str();
}

std::string text(const io::Record::Value* v) { return v ? format_value(*v) : std::string(); }

/// A string column of a gnuplot data file: double quotes (a double quote inside becomes a single one).
std::string data_string(std::string s) {
  std::replace(s.begin(), s.end(), '"', '\'');
  return "\"" + s + "\"";
}

/// A gnuplot string literal (single quotes: only '' needs escaping).
std::string gp_string(const std::string& s) {
  std::string q = "'";
  for (const char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}

std::string axis_label(const std::string& name) {
  for (const auto& info : chip::parameter_infos())
    if (info.name == name) return name + " (" + info.unit + ")";
  return name;
}

/// The unit that writes the largest of `seconds` with 1 to 3 digits before the point: plots of a
/// microsecond-scale model in ms would show only 0.00x.
struct TimeUnit {
  const char* name;
  double per_second;
};
TimeUnit time_unit(const std::vector<double>& seconds) {
  double largest = 0;
  for (const double x : seconds)
    if (x > largest) largest = x;
  if (largest >= 1) return {"s", 1};
  if (largest >= 1e-3) return {"ms", 1e3};
  if (largest >= 1e-6) return {"us", 1e6};
  return {"ns", 1e9};
}

/// A gnuplot double-quoted string, whose "\n" breaks the line (titles with a second line).
std::string gp_text(const std::string& s) {
  std::string q = "\"";
  for (const char c : s) q += c == '\n' ? std::string("\\n") : c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c);
  return q + "\"";
}

/// Runs study.gp in `dir` and renames the images `names` (PNG and SVG) into place, all or none; a failure
/// (gnuplot missing or failing) goes into result.warning.
void draw(const std::string& dir, const std::vector<std::string>& names, PlotSet& result) {
  std::vector<std::string> images;
  for (const std::string& name : names)
    for (const char* format : {"png", "svg"}) images.push_back((fs::path(dir) / (name + "." + format)).string());
  // gnuplot works in the plot folder and writes <image>.tmp.<pid>; the images are renamed into place only
  // when every one of them was drawn.
  const std::string script = fs::absolute(fs::path(dir) / "study.gp").string();
  const std::string suffix = ".tmp." + std::to_string(::getpid());  // two collects at once do not clash
  const ProgramResult run = run_program({"gnuplot", "-e", "suffix='" + suffix + "'; cd " + gp_string(dir), script}, true);
  if (run.exit_code != 0) {
    std::error_code ignored;
    for (const auto& image : images) fs::remove(image + suffix, ignored);
    result.warning = run.exit_code == 127 ? "gnuplot not found: no plots (install gnuplot-nox; the data and script are in " +
                                                dir + ")"
                                          : "gnuplot failed (exit " + std::to_string(run.exit_code) + ") on " + script +
                                                ": " + run.output.substr(run.output.rfind('\n') + 1);
    return;
  }
  for (const auto& image : images) {
    io::check_writable(image, true);
    std::error_code ec;
    fs::rename(image + suffix, image, ec);
    if (ec) throw io::FileError(image + ": cannot rename the drawn plot into place: " + ec.message(), ExitCode::io);
    result.files.push_back(image);
  }
}

/// How a study's rows are drawn: x is the first swept parameter (numeric, or categories placed at 0, 1,
/// ... in first-seen order); one series per combination of the other swept parameters, in the order the
/// points come.
struct SeriesLayout {
  std::string x_name;
  bool numeric_x = true;
  std::vector<std::string> series;                   ///< [series] label ("" when there is one)
  std::vector<std::vector<std::size_t>> series_rows;  ///< [series] row indices
  std::unordered_map<std::string, std::size_t> category_index;

  double x(const io::Record& r) const {
    return numeric_x ? number(r, x_name) : static_cast<double>(category_index.at(text(r.find(x_name))));
  }
};

SeriesLayout series_layout(const Study& s, const std::vector<io::Record>& rows) {
  SeriesLayout l;
  l.x_name = s.axes.empty() ? "point" : s.axes.front().name;
  for (const auto& r : rows)
    l.numeric_x = l.numeric_x && r.find(l.x_name) && !std::holds_alternative<std::string>(*r.find(l.x_name));
  std::unordered_map<std::string, std::size_t> series_index;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::string label;
    for (std::size_t a = 1; a < s.axes.size(); ++a)
      label += (label.empty() ? "" : " ") + s.axes[a].name + "=" + text(rows[i].find(s.axes[a].name));
    const auto [it, fresh] = series_index.emplace(label, l.series.size());
    if (fresh) {
      l.series.push_back(label);
      l.series_rows.emplace_back();
    }
    l.series_rows[it->second].push_back(i);
    l.category_index.emplace(text(rows[i].find(l.x_name)), l.category_index.size());
  }
  return l;
}

}  // namespace

PlotSet render_plots(const Study& s, const std::vector<io::Record>& rows, const std::string& dir) {
  io::create_folder(dir);
  const SeriesLayout layout = series_layout(s, rows);
  const std::string& x_name = layout.x_name;
  const bool numeric_x = layout.numeric_x;
  const std::vector<std::string>& series = layout.series;
  const std::vector<std::vector<std::size_t>>& series_rows = layout.series_rows;

  // Infeasible points have no figures: they are named under every title instead of vanishing from
  // the lines. All infeasible: nothing to draw.
  std::vector<std::string> infeasible_labels;
  int64_t n_infeasible = 0;
  std::vector<double> latencies, step_times;
  for (const auto& r : rows) {
    const auto* status = r.find("status");
    if (status && std::holds_alternative<std::string>(*status) && std::get<std::string>(*status) == "ok") {
      latencies.push_back(number(r, "ttft_s")), latencies.push_back(number(r, "tpot_s"));
      step_times.push_back(number(r, "tpot_s"));
      continue;
    }
    std::string label;
    for (const auto& a : s.axes) label += (label.empty() ? "" : " ") + a.name + "=" + text(r.find(a.name));
    ++n_infeasible;
    infeasible_labels.push_back(label.empty() ? "point " + text(r.find("point")) : label);
  }
  // At most two lines under the title (the plot is 960 pixels wide); the table has them all.
  std::string infeasible, line;
  for (std::size_t i = 0; i < infeasible_labels.size(); ++i) {
    const std::string& item = infeasible_labels[i];
    if (!line.empty() && line.size() + item.size() > 100) {
      if (!infeasible.empty()) {
        line += "... and " + std::to_string(infeasible_labels.size() - i) + " more (see results.csv)";
        break;
      }
      infeasible = line + "\n", line.clear();
    }
    line += item + (i + 1 < infeasible_labels.size() ? "; " : "");
  }
  infeasible += line;
  PlotSet result;
  if (latencies.empty()) {
    result.warning = "no feasible point: no plots (results.csv gives each point's reason)";
    return result;
  }
  auto plot_title = [&](const std::string& what) {
    return gp_text(s.name + ": " + what +
                   (infeasible.empty() ? "" : "\n" + std::to_string(n_infeasible) + " infeasible, not drawn: " + infeasible));
  };
  const TimeUnit latency_unit = time_unit(latencies), step_unit = time_unit(step_times);
  const std::string lat = latency_unit.name;

  // data.dat: one block per series (gnuplot `index`); bars.dat: one row per point for the stacked bars.
  std::ostringstream data, bars;
  double x_min = std::numeric_limits<double>::infinity(), x_max = 0, tps_min = x_min, tps_max = 0;
  bool batched = false;  // some point serves several sequences: tokens/s per system differs from per user
  std::vector<double> x_values;
  for (std::size_t k = 0; k < series.size(); ++k) {
    data << "# series " << k << ": " << (series[k].empty() ? "all points" : series[k])
         << "\n# x label ttft_" << lat << " tpot_" << lat
         << " tokens_per_s_user tokens_per_s_system sram_max_MB sram_mean_MB sram_capacity_MB\n";
    for (const std::size_t i : series_rows[k]) {
      const io::Record& r = rows[i];
      const double x = layout.x(r);
      x_min = std::min(x_min, x), x_max = std::max(x_max, x);
      if (x_values.size() <= 10 && std::find(x_values.begin(), x_values.end(), x) == x_values.end()) x_values.push_back(x);
      const double user = number(r, "tokens_per_s_user"), system = number(r, "tokens_per_s_system");
      if (user > 0) tps_min = std::min(tps_min, user), tps_max = std::max(tps_max, system);
      batched = batched || (user > 0 && system != user);
      data << g(x, 17) << " " << data_string(text(r.find(x_name)));
      for (const double column : {number(r, "ttft_s", latency_unit.per_second), number(r, "tpot_s", latency_unit.per_second), user, system,
                                  number(r, "sram_bytes_max", 1e-6), number(r, "sram_bytes_mean", 1e-6),
                                  number(r, "sram_bytes_per_chip", 1e-6)})
        data << " " << g(column, 9);
      data << "\n";
    }
    data << "\n\n";
  }
  const std::string step = step_unit.name;
  bars << "# label compute_" << step << " transfer_" << step << " idle_" << step << " (of the time per output token)\n";
  for (const auto& r : rows) {
    std::string label;
    for (const auto& a : s.axes) label += (label.empty() ? "" : " ") + a.name + "=" + text(r.find(a.name));
    if (label.empty()) label = "point " + text(r.find("point"));
    if (std::isnan(number(r, "tpot_s"))) label += " (infeasible)";
    bars << data_string(label) << " " << g(number(r, "tpot_compute_s", step_unit.per_second), 9) << " "
         << g(number(r, "tpot_transfer_s", step_unit.per_second), 9) << " "
         << g(number(r, "tpot_idle_s", step_unit.per_second), 9) << "\n";
  }

  const bool log_x = numeric_x && x_min > 0 && x_max / x_min >= 8;
  const bool log_y = tps_min > 0 && tps_max / tps_min >= 20;
  // Few numeric x values: a tic at each; many: round numbers on the (log) axis.
  std::string x_tics = "set format x '%g'\n";
  if (numeric_x && x_values.size() <= 10) {
    std::sort(x_values.begin(), x_values.end());
    x_tics = "set xtics (";
    for (std::size_t i = 0; i < x_values.size(); ++i)
      x_tics += (i ? ", '" : "'") + g(x_values[i], 6) + "' " + g(x_values[i], 17);
    x_tics += ")\n";
  }
  const std::string x_label = axis_label(x_name);
  auto lines = [&](int column, const std::string& what, const std::string& axes, const std::string& style) {
    std::string plot;
    for (std::size_t k = 0; k < series.size(); ++k) {
      std::string title = what.empty() ? series[k] : what + (series[k].empty() ? "" : ", " + series[k]);
      if (title.empty()) title = "all points";
      plot += std::string(plot.empty() ? "" : ", ") + "'data.dat' index " + std::to_string(k) + " using 1:" +
              std::to_string(column) + (numeric_x ? "" : ":xtic(2)") + " axes " + axes + " with linespoints " + style +
              " title " + gp_string(title);
    }
    return plot;
  };

  std::ostringstream gp;
  gp << "# Plots of study " << s.name << ", written by lpurt sweep. Redraw with: gnuplot study.gp (in this folder)\n"
     << "if (!exists('suffix')) suffix = ''\n"
     << "set datafile missing 'nan'\nset grid\nset key outside below noenhanced box\n"
     << "set xlabel " << gp_string(x_label) << "\n"
     << "set offsets graph 0.03, graph 0.03, graph 0.05, 0\nset autoscale xfix\n"
     << (log_x ? "set logscale x 2\n" : "") << (numeric_x ? x_tics : "set xtics rotate by -30\n")
     << "do for [fmt in 'png svg'] {\n"
     << "  if (fmt eq 'png') { set terminal pngcairo size 960,600 noenhanced font ',11' } else { set terminal svg size "
        "960,600 dynamic noenhanced font ',11' }\n"
     << "  set output 'throughput.'.fmt.suffix\n"
     << "  set title " << plot_title("modelled throughput") << "\n"
     << (batched ? "  set ylabel 'tokens/s'\n" : "  set ylabel 'tokens/s per user (= per system: one sequence each)'\n")
     << (log_y ? "  set logscale y\n" : "") << "  plot "
     << (batched ? lines(5, "per user", "x1y1", "lw 2 pt 7") + ", " + lines(6, "per system", "x1y1", "lw 2 pt 5 dt 2")
                 : lines(5, series.size() > 1 ? "" : "per user", "x1y1", "lw 2 pt 7"))
     << "\n"
     << "  unset logscale y\n"
     << "  set output 'latency.'.fmt.suffix\n"
     << "  set title " << plot_title("modelled latency") << "\n"
     << "  set ylabel 'time to first token (" << lat << ")'\n  set y2label 'time per output token (" << lat << ")'\n"
     << "  set ytics nomirror\n  set y2tics\n  plot " << lines(3, "time to first token", "x1y1", "lw 2 pt 7") << ", "
     << lines(4, "time per output token (right axis)", "x1y2", "lw 2 pt 5 dt 2") << "\n"
     << "  unset y2tics\n  unset y2label\n  set ytics mirror\n"
     << "  set output 'sram.'.fmt.suffix\n"
     << "  set title " << plot_title("SRAM per chip") << "\n"
     << "  set ylabel 'MB'\n  set yrange [0:*]\n  plot " << lines(7, "busiest chip", "x1y1", "lw 2 pt 7") << ", "
     << lines(8, "mean chip", "x1y1", "lw 2 pt 5 dt 2") << ", 'data.dat' index 0 using 1:9 with lines lw 1 lc rgb 'black' "
     << "title 'capacity'\n  set autoscale y\n"
     << "  set output 'time_per_token.'.fmt.suffix\n"
     << "  set title " << plot_title("time per output token (compute and transfers on the critical path, idle)") << "\n"
     << "  unset logscale x\n  set style data histograms\n  set style histogram rowstacked\n"
     << "  set style fill solid 0.8 border -1\n  set boxwidth 0.7\n  set xtics rotate by -30\n"
     << "  set ylabel '" << step << " per token'\n  set yrange [0:*]\n  unset xlabel\n  set key outside right top\n"
     << "  plot 'bars.dat' using 2:xtic(1) title 'compute', '' using 3 title 'transfer', '' using 4 title 'idle'\n"
     << "  set autoscale y\n  set style data points\n  set key outside below\n  set xlabel " << gp_string(x_label) << "\n" << (log_x ? "  set logscale x 2\n" : "")
     << "  set xtics autofreq norotate\n" << (numeric_x ? "  " + x_tics : "  set xtics rotate by -30\n")
     << "  set output\n}\n";

  io::write_text_atomically((fs::path(dir) / "data.dat").string(), data.str(), true);
  io::write_text_atomically((fs::path(dir) / "bars.dat").string(), bars.str(), true);
  io::write_text_atomically((fs::path(dir) / "study.gp").string(), gp.str(), true);

  draw(dir, {"throughput", "latency", "sram", "time_per_token"}, result);
  return result;
}

PlotSet render_serve_plots(const Study& s, const std::vector<io::Record>& rows, const std::string& dir) {
  io::create_folder(dir);
  // x: the first swept parameter (the offered rate in a latency-against-load study); one series per
  // combination of the others (the policies, the slot counts).
  const SeriesLayout layout = series_layout(s, rows);
  const std::string& x_name = layout.x_name;
  const bool numeric_x = layout.numeric_x;
  const std::vector<std::string>& series = layout.series;
  const std::vector<std::vector<std::size_t>>& series_rows = layout.series_rows;
  std::vector<double> ttfts, tpots;
  int64_t n_infeasible = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto* status = rows[i].find("status");
    if (!status || !std::holds_alternative<std::string>(*status) || std::get<std::string>(*status) != "ok") {
      ++n_infeasible;
      continue;
    }
    ttfts.push_back(number(rows[i], "ttft_p99_s"));
    tpots.push_back(number(rows[i], "tpot_p99_s"));
  }
  PlotSet result;
  if (ttfts.empty()) {
    result.warning = "no feasible point: no plots (results.csv gives each point's reason)";
    return result;
  }
  const TimeUnit ttft_unit = time_unit(ttfts), tpot_unit = time_unit(tpots);
  std::ostringstream data;
  double x_min = std::numeric_limits<double>::infinity(), x_max = 0, ttft_min = x_min, ttft_max = 0;
  for (std::size_t k = 0; k < series.size(); ++k) {
    data << "# series " << k << ": " << (series[k].empty() ? "all points" : series[k]) << "\n# x label ttft_p50_"
         << ttft_unit.name << " ttft_p99_" << ttft_unit.name << " tpot_p50_" << tpot_unit.name << " tpot_p99_"
         << tpot_unit.name << " output_tokens_per_s requests_per_s goodput_requests_per_s joules_per_output_token\n";
    for (const std::size_t i : series_rows[k]) {
      const io::Record& r = rows[i];
      const double x = layout.x(r);
      x_min = std::min(x_min, x), x_max = std::max(x_max, x);
      const double ttft = number(r, "ttft_p50_s", ttft_unit.per_second);
      if (ttft > 0) ttft_min = std::min(ttft_min, ttft), ttft_max = std::max(ttft_max, number(r, "ttft_p99_s", ttft_unit.per_second));
      data << g(x, 17) << " " << data_string(text(r.find(x_name)));
      for (const double column : {ttft, number(r, "ttft_p99_s", ttft_unit.per_second), number(r, "tpot_p50_s", tpot_unit.per_second),
                                  number(r, "tpot_p99_s", tpot_unit.per_second), number(r, "output_tokens_per_s"),
                                  number(r, "requests_per_s"), number(r, "goodput_requests_per_s"),
                                  number(r, "joules_per_output_token")})
        data << " " << g(column, 9);
      data << "\n";
    }
    data << "\n\n";
  }
  const bool log_x = numeric_x && x_min > 0 && x_max / x_min >= 8;
  const bool log_ttft = ttft_min > 0 && ttft_max / ttft_min >= 20;
  const std::string x_label = x_name == "rate" ? "offered load (requests/s)" : axis_label(x_name);
  auto lines = [&](int column, const std::string& what, const std::string& style) {
    std::string plot;
    for (std::size_t k = 0; k < series.size(); ++k) {
      std::string title = what + (series[k].empty() ? "" : ", " + series[k]);
      plot += std::string(plot.empty() ? "" : ", ") + "'data.dat' index " + std::to_string(k) + " using 1:" +
              std::to_string(column) + (numeric_x ? "" : ":xtic(2)") + " with linespoints " + style + " lc " +
              std::to_string(k + 1) + " title " + gp_string(title);
    }
    return plot;
  };
  auto title = [&](const std::string& what) {
    return gp_text(s.name + ": " + what +
                   (n_infeasible > 0 ? "\n" + std::to_string(n_infeasible) + " infeasible point(s), not drawn (see results.csv)" : ""));
  };
  std::ostringstream gp;
  gp << "# Plots of serving study " << s.name << ", written by lpurt sweep. Redraw with: gnuplot study.gp (in this folder)\n"
     << "if (!exists('suffix')) suffix = ''\n"
     << "set datafile missing 'nan'\nset grid\nset key outside below noenhanced box\n"
     << "set xlabel " << gp_string(x_label) << "\nset offsets graph 0.03, graph 0.03, graph 0.05, 0\nset autoscale xfix\n"
     << (log_x ? "set logscale x 2\n" : "") << (numeric_x ? "set format x '%g'\n" : "set xtics rotate by -30\n")
     << "do for [fmt in 'png svg'] {\n"
     << "  if (fmt eq 'png') { set terminal pngcairo size 960,600 noenhanced font ',11' } else { set terminal svg size "
        "960,600 dynamic noenhanced font ',11' }\n"
     << "  set output 'ttft.'.fmt.suffix\n  set title " << title("time to first token against load") << "\n"
     << "  set ylabel 'time to first token (" << ttft_unit.name << ")'\n" << (log_ttft ? "  set logscale y\n" : "")
     << "  plot " << lines(3, "p50", "lw 2 pt 7") << ", " << lines(4, "p99", "lw 2 pt 5 dt 2") << "\n  unset logscale y\n"
     << "  set output 'tpot.'.fmt.suffix\n  set title " << title("time per output token against load") << "\n"
     << "  set ylabel 'time per output token (" << tpot_unit.name << ")'\n  set yrange [0:*]\n"
     << "  plot " << lines(5, "p50", "lw 2 pt 7") << ", " << lines(6, "p99", "lw 2 pt 5 dt 2") << "\n  set autoscale y\n"
     << "  set output 'throughput.'.fmt.suffix\n  set title " << title("completed requests and goodput") << "\n"
     << "  set ylabel 'requests/s'\n  set yrange [0:*]\n"
     << "  plot " << lines(8, "completed", "lw 2 pt 7") << ", " << lines(9, "meeting the SLOs", "lw 2 pt 5 dt 2")
     << "\n  set autoscale y\n"
     << "  set output 'energy.'.fmt.suffix\n  set title " << title("energy per output token") << "\n"
     << "  set ylabel 'J per output token'\n  set logscale y\n  plot " << lines(10, "J/token", "lw 2 pt 7")
     << "\n  unset logscale y\n  set output\n}\n";
  io::write_text_atomically((fs::path(dir) / "data.dat").string(), data.str(), true);
  io::write_text_atomically((fs::path(dir) / "study.gp").string(), gp.str(), true);
  draw(dir, {"ttft", "tpot", "throughput", "energy"}, result);
  return result;
}

}  // namespace lpurt::jobs
