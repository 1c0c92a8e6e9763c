// lpurt calibrate: the fit recovers a constant it did not see, stays inside the declared bracket, and a
// malformed published-figures file is refused with its line and key.

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "chip/error.hpp"
#include "chip/hardware.hpp"
#include "jobs/calibrate.hpp"

namespace lpurt::jobs {
namespace {

class PublishedFile {
 public:
  explicit PublishedFile(const std::string& text)
      : path_((std::filesystem::temp_directory_path() / ("lpurt_published_" + std::to_string(::getpid()) + "_" +
                                                         std::to_string(counter_++) + ".toml")).string()) {
    std::ofstream(path_) << text;
  }
  ~PublishedFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::string path_;
};

std::string figure(const std::string& model, int64_t chips, double published, bool fit, const std::string& extra = "") {
  return "[[figure]]\nname = \"" + model + " on " + std::to_string(chips) + "\"\nmodel = \"" + model +
         "\"\nmetric = \"tokens_per_s_user\"\nchips = " + std::to_string(chips) +
         "\nprompt_tokens = 16\noutput_tokens = 8\npublished = " + std::to_string(published) +
         "\nband = 0.1\nfit = " + (fit ? "true" : "false") + "\nsource = \"a test\"\n" + extra + "\n";
}

std::string error_of(const std::string& text) {
  const PublishedFile f(text);
  try {
    load_published_figures(f.path());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Calibrate, RecoversAWeightPathItDidNotSeeAndPredictsAHeldBackFigure) {
  // "Published" figures made by lpurt itself with a weight path of 5,000 B/cycle: the fit, starting from the
  // datasheet's 20,480, must find it again, and then predict the held-back figure (another model) too.
  chip::ChipSpec truth = chip::hardware_preset("groq-lpu-v1-datasheet");
  chip::set_parameter(truth, "weight_bytes_per_cycle", 5000, "test");
  PublishedFigure tinyllama;
  tinyllama.model = "tinyllama-1.1b", tinyllama.metric = "tokens_per_s_user", tinyllama.chips = 16;
  tinyllama.tp = 4, tinyllama.pp = 4, tinyllama.prompt_tokens = 16, tinyllama.output_tokens = 8;
  PublishedFigure small = tinyllama;
  small.model = "small", small.chips = 4, small.tp = 2, small.pp = 2;
  const PublishedFile f(figure("tinyllama-1.1b", 16, predict_figure(tinyllama, truth), true, "tp = 4\npp = 4") +
                        figure("small", 4, predict_figure(small, truth), false, "tp = 2\npp = 2"));
  const auto figures = load_published_figures(f.path());
  const Calibration c = calibrate(figures, chip::hardware_preset("groq-lpu-v1-datasheet"), {});
  ASSERT_EQ(c.parameters.size(), 1u);
  EXPECT_EQ(c.parameters[0].declared.name, "weight_bytes_per_cycle");
  EXPECT_EQ(c.parameters[0].start_value, 20480);
  EXPECT_NEAR(c.parameters[0].fitted_value, 5000, 50);
  ASSERT_EQ(c.figures.size(), 2u);
  EXPECT_GT(c.figures[0].base_prediction, 1.5 * c.figures[0].figure.published);  // the datasheet is far off
  EXPECT_NEAR(c.figures[0].error(), 0, 0.005);
  EXPECT_NEAR(c.figures[1].error(), 0, 0.01);
  EXPECT_TRUE(c.figures[1].in_band());
  EXPECT_LT(c.evaluations, 40);
}

TEST(Calibrate, AFitNeverLeavesTheDeclaredBracket) {
  // A published figure far faster than any value in the bracket allows: the fit stops at the bracket's top.
  PublishedFigure small;
  small.model = "small", small.metric = "tokens_per_s_user", small.chips = 4, small.tp = 2, small.pp = 2;
  small.prompt_tokens = 16, small.output_tokens = 8;
  const double fastest = predict_figure(small, chip::hardware_preset("groq-lpu-v1-datasheet"));
  const PublishedFile f(figure("small", 4, 10 * fastest, true, "tp = 2\npp = 2"));
  const Calibration c = calibrate(load_published_figures(f.path()), chip::hardware_preset("groq-lpu-v1-datasheet"), {});
  EXPECT_EQ(c.parameters[0].fitted_value, c.parameters[0].declared.max_value);
  EXPECT_FALSE(c.figures[0].in_band());
}

TEST(Calibrate, MalformedFiguresAreRefusedWithTheirLineAndKey) {
  EXPECT_NE(error_of("").find("no [[figure]]"), std::string::npos);
  EXPECT_NE(error_of(figure("nosuch", 4, 100, true)).find("unknown model preset \"nosuch\""), std::string::npos);
  EXPECT_NE(error_of(figure("small", 4, 100, true, "colour = 3")).find("unknown key \"colour\""), std::string::npos);
  EXPECT_NE(error_of(figure("small", 4, 100, true, "published_range = [200.0, 300.0]")).find("published_range must be"),
            std::string::npos);
  std::string text = figure("small", 4, 100, true);
  text.replace(text.find("metric = \"tokens_per_s_user\""), 28, "metric = \"watts\"");
  EXPECT_NE(error_of(text).find("metric \"watts\""), std::string::npos);
  text = figure("small", 4, 100, true);
  text.replace(text.find("band = 0.1"), 10, "band = 1.5");
  EXPECT_NE(error_of(text).find("band must be below 1"), std::string::npos);
  text = figure("small", 4, 100, true);
  text.replace(text.find("chips = 4"), 9, "chips = \"four\"");
  EXPECT_NE(error_of(text).find(":1: chips must be an integer"), std::string::npos);
  const PublishedFile none(figure("small", 4, 100, false));
  try {
    calibrate(load_published_figures(none.path()), chip::ChipSpec{}, {});
    ADD_FAILURE() << "a file without fit = true must be refused";
  } catch (const chip::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("no figure has fit = true"), std::string::npos);
  }
}

}  // namespace
}  // namespace lpurt::jobs
