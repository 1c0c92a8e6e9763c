#pragma once
/// \file
/// `lpurt calibrate`: fits the declared uncertain hardware constants (chip::uncertain_parameters(), at most
/// two, each inside its cited bracket) to a table of published end-to-end figures kept in the repository
/// (docs/published.toml), and reports every figure's prediction and residual with the first-principles
/// values and with the fitted ones. One constant set serves every figure: there are no per-model factors.
///
/// The fit minimises the sum over the figures marked `fit = true` of (ln(predicted / published))^2, one
/// parameter at a time by golden-section search on a log scale (coordinate descent when there are two).
/// Figures with `fit = false` are predicted and checked, never fitted: they test that the fit generalises.
///
/// Example usage:
/// \code
///   const auto figures = lpurt::jobs::load_published_figures("docs/published.toml");
///   const auto result = lpurt::jobs::calibrate(figures, lpurt::chip::hardware_preset("groq-lpu-v1-datasheet"), {});
/// \endcode

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "chip/hardware.hpp"

namespace lpurt::jobs {

/// One published figure and the run that reproduces it (timing only, from a model preset's configuration).
struct PublishedFigure {
  std::string name;
  std::string model;            ///< a model preset (chip::model_preset)
  std::string metric;           ///< tokens_per_s_user, tokens_per_s_system, ttft_s or tpot_s
  int64_t chips = 0;
  int64_t tp = 0, pp = 0;       ///< 0: the planner's choice
  int64_t context = 0;          ///< 0: the model's max_seq_len
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  int64_t batch = 1;
  double published = 0;         ///< the value compared against
  double published_low = 0;     ///< the range the sources give (equal to published for a single value)
  double published_high = 0;
  double band = 0;              ///< a prediction is in band when |predicted / published - 1| <= band
  bool fit = false;             ///< used by the fit, or held back to test it
  std::string source;
  std::string origin;           ///< "published.toml:12", for messages
};

/// Reads a published-figures file (TOML, an array of [[figure]] tables). Throws InputError naming the
/// file, line and key for a missing or mistyped key, an unknown model preset or metric, or a band or
/// value out of range.
std::vector<PublishedFigure> load_published_figures(const std::string& path);

/// The figure's metric as lpurt predicts it on `hardware`.
double predict_figure(const PublishedFigure& figure, const chip::ChipSpec& hardware);

struct FittedParameter {
  chip::UncertainParameter declared;
  double start_value = 0;   ///< in the base system (groq-lpu-v1-datasheet: the first-principles value)
  double fitted_value = 0;
};

struct FigureResult {
  PublishedFigure figure;
  double base_prediction = 0;    ///< with the base system's values
  double fitted_prediction = 0;  ///< with the fitted values
  double error() const { return fitted_prediction / figure.published - 1; }
  bool in_band() const { return error() >= -figure.band && error() <= figure.band; }
};

struct Calibration {
  chip::ChipSpec base;
  chip::ChipSpec fitted;        ///< base with the fitted values
  std::vector<FittedParameter> parameters;
  std::vector<FigureResult> figures;
  int64_t evaluations = 0;      ///< predictions the fit made
};

/// Fits every declared uncertain parameter to the `fit` figures, starting from `base`. `progress` sees each
/// evaluation: (parameter, value, cost). Throws ConfigError if no figure is marked for the fit.
Calibration calibrate(const std::vector<PublishedFigure>& figures, const chip::ChipSpec& base,
                      const std::function<void(const std::string&, double, double)>& progress);

}  // namespace lpurt::jobs
