#pragma once
/// \file
/// A study's plots, rendered by gnuplot as PNG and SVG: throughput (tokens/s per user and per system),
/// latency (time to first token, time per output token), time per output token split into compute,
/// transfer and idle, and SRAM use per chip; each against the first swept parameter, one line per
/// combination of the others. The data and the gnuplot script stay next to the images, so a plot can be
/// restyled by editing the script and running `gnuplot study.gp`.

#include <string>
#include <vector>

#include "io/record.hpp"
#include "jobs/study.hpp"

namespace lpurt::jobs {

struct PlotSet {
  std::vector<std::string> files;  ///< images written
  std::string warning;             ///< why there are none (gnuplot missing or failed), or ""
};

/// `rows` are the study table's rows (one per point, in point order).
PlotSet render_plots(const Study& study, const std::vector<io::Record>& rows, const std::string& dir);

/// A serving study's plots (latency against load): time to first token and time per output token (p50 and
/// p99), completed requests and goodput, and energy per output token, against the first swept parameter
/// (the offered rate), one line per combination of the others (e.g. the policies).
PlotSet render_serve_plots(const Study& study, const std::vector<io::Record>& rows, const std::string& dir);

}  // namespace lpurt::jobs
