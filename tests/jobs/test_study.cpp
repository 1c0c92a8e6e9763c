// Job files: the schema's errors name the key and the line; points expand in the file's order; a study
// written back with to_toml reads back to the same points.
#include <gtest/gtest.h>

#include <string>

#include "jobs/study.hpp"

namespace lpurt::jobs {
namespace {

const char* const base_job = R"(# a comment
[study]
name = "grid"
output = "/tmp/lpurt-test-grid"
ranks = 2
throttle = 3

[model]
preset = "tiny"
seed = 7

[system]
preset = "groq-lpu-v1"
set = { hop_latency_ns = 250.0 }

[run]
prompt_len = 8
tokens = 4

[sweep]
chips = [2, 4]
link_bytes_per_s = [14e9, 28e9, 56e9]
)";

std::string error_of(const std::string& text, ExitCode code) {
  try {
    parse_study(text, "/tmp/job.toml");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  return "no error";
}

/// A job file the run cannot take (exit 5) or, with ExitCode::input, a malformed one (exit 3).
void expect_error(const std::string& text, const std::string& where, const std::string& what,
                  ExitCode code = ExitCode::config) {
  const std::string m = error_of(text, code);
  EXPECT_NE(m.find(where), std::string::npos) << "expected \"" << where << "\" in: " << m;
  EXPECT_NE(m.find(what), std::string::npos) << "expected \"" << what << "\" in: " << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << "one line: " << m;
}

TEST(Study, ReadsEveryKeyAndExpandsTheGridRowMajor) {
  const Study s = parse_study(base_job, "/tmp/job.toml");
  EXPECT_EQ(s.name, "grid");
  EXPECT_EQ(s.output_dir, "/tmp/lpurt-test-grid");
  EXPECT_EQ(s.ranks, 2);
  EXPECT_EQ(s.throttle, 3);
  EXPECT_TRUE(s.timing_only);
  EXPECT_EQ(s.model_preset, "tiny");
  EXPECT_EQ(s.seed, 7u);
  const auto points = expand(s);
  ASSERT_EQ(points.size(), 6u);
  // The first axis varies slowest.
  EXPECT_EQ(points[0].label, "chips=2 link_bytes_per_s=1.4e+10");
  EXPECT_EQ(points[2].label, "chips=2 link_bytes_per_s=5.6e+10");
  EXPECT_EQ(points[3].label, "chips=4 link_bytes_per_s=1.4e+10");
  EXPECT_EQ(points[4].request.n_chips, 4);
  EXPECT_EQ(points[4].hardware.link_bytes_per_s, 28e9);
  EXPECT_EQ(points[4].hardware.hop_latency_ns, 250.0);
  EXPECT_EQ(points[4].prompt_len, 8);
  EXPECT_EQ(points[4].tokens, 4);
  // Every point has its own key and file.
  for (std::size_t i = 0; i < points.size(); ++i)
    for (std::size_t j = i + 1; j < points.size(); ++j) {
      EXPECT_NE(points[i].key, points[j].key);
      EXPECT_NE(points[i].file, points[j].file);
    }
}

TEST(Study, WrittenBackItReadsToTheSamePoints) {
  const Study s = parse_study(base_job, "/tmp/job.toml");
  const Study again = parse_study(to_toml(s), "/tmp/elsewhere/job.toml");
  const auto a = expand(s), b = expand(again);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].key, b[i].key);
    EXPECT_EQ(a[i].file, b[i].file);
    EXPECT_EQ(a[i].label, b[i].label);
  }
}

TEST(Study, DottedParameterNamesSurviveTheWrittenJob) {
  // Straggler and link studies use names with dots: written back, they must stay keys, not tables.
  const Study s = parse_study(R"([model]
preset = "tiny"
[system.set]
"link_bandwidth_factor.0-1" = 0.5
[run]
chips = 4
[sweep]
"chip_speed_factor.2" = [1.0, 0.5]
)",
                              "/tmp/job.toml");
  const Study again = parse_study(to_toml(s), "/tmp/elsewhere/job.toml");
  const auto a = expand(s), b = expand(again);
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].key, b[i].key);
  EXPECT_EQ(b[1].hardware.chip_speed(2), 0.5);
  EXPECT_EQ(b[1].hardware.link_bandwidth(1, 0), 0.5);
}

TEST(Study, SweepAxesKeepTheFileOrderNotTheAlphabet) {
  const Study s = parse_study(R"([model]
preset = "tiny"
[run]
chips = 4
[sweep]
tokens = [1, 2]
link_bytes_per_s = [14e9, 28e9]
chip_speed_factor.1 = [1.0, 0.5]
batch = { from = 1, to = 2, step = 1 }
)",
                              "/tmp/job.toml");
  ASSERT_EQ(s.axes.size(), 4u);
  EXPECT_EQ(s.axes[0].name, "tokens");
  EXPECT_EQ(s.axes[1].name, "link_bytes_per_s");
  EXPECT_EQ(s.axes[2].name, "chip_speed_factor.1");
  EXPECT_EQ(s.axes[3].name, "batch");
  EXPECT_EQ(s.axes[0].origin, "/tmp/job.toml:6");
  const auto points = expand(s);
  EXPECT_EQ(points[1].label, "tokens=1 link_bytes_per_s=1.4e+10 chip_speed_factor.1=1 batch=2");
  const Study again = parse_study(to_toml(s), "/tmp/elsewhere/job.toml");
  ASSERT_EQ(again.axes.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(again.axes[i].name, s.axes[i].name);
}

TEST(Study, RepeatedPointsAreRefused) {
  expect_error("[model]\npreset = \"tiny\"\n[sweep]\nchips = [1, 2, 1]\n", "points 0 and 2 (chips=1)", "the same run");
  expect_error("[model]\npreset = \"tiny\"\n[sweep]\nchips = { from = 1, to = 1e30, times = 2 }\n", "sweep.chips",
               "beyond the integers");
}

TEST(Study, PointKeysDoNotDependOnTheOrderOfTheSweep) {
  std::string reordered = base_job;
  reordered.replace(reordered.find("chips = [2, 4]"), 14, "chips = [4, 2]");
  const auto a = expand(parse_study(base_job, "/tmp/job.toml"));
  const auto b = expand(parse_study(reordered, "/tmp/job.toml"));
  EXPECT_EQ(a[0].key, b[3].key);
  EXPECT_EQ(a[0].file, b[3].file);
}

TEST(Study, RangesAndRelativePaths) {
  const Study s = parse_study(R"([model]
file = "models/m.h5"
[sweep]
chips = { from = 72, to = 4608, times = 2 }
batch = { from = 1, to = 4, step = 1 }
)",
                              "/data/studies/job.toml");
  EXPECT_EQ(s.model_file, "/data/studies/models/m.h5");
  EXPECT_EQ(s.output_dir, "/data/studies/job");
  ASSERT_EQ(s.axes.size(), 2u);
  ASSERT_EQ(s.axes[0].values.size(), 7u);  // 72, 144, ..., 4608
  EXPECT_EQ(std::get<int64_t>(s.axes[0].values.back()), 4608);
  EXPECT_EQ(s.axes[1].values.size(), 4u);
}

TEST(Study, FlagAxes) {
  const Axis list = parse_axis_flag("chips=8,16,32");
  EXPECT_EQ(list.name, "chips");
  ASSERT_EQ(list.values.size(), 3u);
  EXPECT_EQ(std::get<int64_t>(list.values[2]), 32);
  const Axis range = parse_axis_flag("link_bytes_per_s=7e9..56e9*2");
  ASSERT_EQ(range.values.size(), 4u);
  EXPECT_EQ(std::get<double>(range.values[3]), 56e9);
  EXPECT_EQ(std::get<std::string>(parse_axis_flag("topology=chain,dragonfly").values[0]), "chain");
  EXPECT_THROW(parse_axis_flag("chips"), Error);
  EXPECT_THROW(parse_axis_flag("chips=1..8"), Error);
}

TEST(Study, ErrorsNameTheKeyAndTheLine) {
  const std::string model = "[model]\npreset = \"tiny\"\n";
  expect_error(model + "[run]\nchips = 4\nchipz = 2\n", "job.toml:5: run.chipz", "not a known key", ExitCode::input);
  expect_error(model + "[run]\nchips = \"four\"\n", "job.toml:4: run.chips", "must be an integer, got string",
               ExitCode::input);
  expect_error(model + "[run]\nchips = 0\n", "run.chips", "must be at least 1, got 0");
  expect_error(model + "[sweep]\nchips = []\n", "job.toml:4: sweep.chips", "empty list");
  expect_error(model + "[sweep]\nchips = [1, 2.5]\n", "job.toml:4: sweep.chips", "must be an integer, got float",
               ExitCode::input);
  expect_error(model + "[sweep]\nwarp_factor = [1, 2]\n", "job.toml:4: sweep.warp_factor",
               "not a run, serving or hardware parameter", ExitCode::input);
  expect_error(model + "[run]\nchips = 4\n[sweep]\nchips = [1, 2]\n", "job.toml:6: sweep.chips", "also fixed in [run]");
  expect_error(model + "[run]\nchips = 4\n[sweep]\nlink_bytes_per_s = [1e9, -1e9]\n", "sweep.link_bytes_per_s = -1e+09",
               "link_bytes_per_s");
  expect_error(model + "[run]\nchips = 4\n[sweep]\ntopology = [\"ring\"]\n", "job.toml:6", "topology must be");
  expect_error(model + "[run]\nchips = 4\n[system]\nset = { sram_megabytes = 1 }\n", "job.toml:6: system.set.sram_megabytes",
               "not a hardware parameter", ExitCode::input);
  expect_error(model + "[run]\nchips = 4\n[study]\nmode = \"fast\"\n", "job.toml:6: study.mode",
               "\"timing-only\" or \"functional\"");
  expect_error(model + "[run]\nchips = 4\n[studdy]\n", "job.toml:5: studdy", "not a known section", ExitCode::input);
  expect_error("[model]\npreset = \"huge\"\n[run]\nchips = 1\n", "job.toml:2: model.preset", "not a preset");
  expect_error("[model]\npreset = \"tiny\"\nfile = \"x.h5\"\n[run]\nchips = 1\n", "job.toml:1: model", "exactly one of");
  expect_error(model, "job.toml", "chip count is missing");
  expect_error(model + "[run]\nchips = 4\n[sweep]\nbatch = { from = 1, to = 1e9, step = 1 }\n", "sweep.batch",
               "more than 100000");
  expect_error(model + "[run]\nchips = [4\n", "job.toml:4:", "(in \"chips = [4\")", ExitCode::input);  // TOML syntax
  expect_error("[run]\nchips = 1\n", "job.toml", "a [model] section", ExitCode::input);
}

TEST(Study, ServingStudiesSweepServingParameters) {
  const std::string job = R"([study]
name = "load"
output = "/tmp/lpurt-test-load"
[model]
preset = "tiny"
[run]
chips = 4
prompt_len = 8
[serve]
requests = 100
slo_ttft_ms = 5.0
[sweep]
rate = [10.0, 20.0]
policy = ["decode-priority", "static-batch"]
)";
  const Study s = parse_study(job, "/tmp/job.toml");
  EXPECT_TRUE(s.serving);
  const std::vector<Point> points = expand(s);
  ASSERT_EQ(points.size(), 4u);
  EXPECT_EQ(points[1].label, "rate=10 policy=static-batch");
  EXPECT_EQ(std::get<int64_t>(*points[1].serve.find("requests")), 100);
  EXPECT_EQ(std::get<std::string>(*points[1].serve.find("policy")), "static-batch");
  EXPECT_EQ(std::get<double>(*points[2].serve.find("rate")), 20.0);
  EXPECT_NE(points[0].key, points[1].key);
  EXPECT_NE(points[0].key.find("\"serve.rate\":10.0"), std::string::npos) << points[0].key;
  // Written back, it reads to the same points.
  const std::vector<Point> again = expand(parse_study(to_toml(s), "/tmp/lpurt-test-load/job.toml"));
  ASSERT_EQ(again.size(), points.size());
  for (std::size_t i = 0; i < points.size(); ++i) EXPECT_EQ(again[i].key, points[i].key);
  // A run study's keys are not a serving study's.
  EXPECT_EQ(expand(parse_study("[model]\npreset = \"tiny\"\n[run]\nchips = 4\n", "/tmp/job.toml"))[0].key.find("\"serve\""),
            std::string::npos);
}

TEST(Study, ServingErrorsNameTheParameter) {
  const std::string head = "[model]\npreset = \"tiny\"\n[run]\nchips = 4\n";
  expect_error(head + "[sweep]\nrate = [1.0, 2.0]\n", "job.toml:6: sweep.rate", "is a serving parameter");
  expect_error(head + "[serve]\nrate = 1.0\nrequest = 4\n", "job.toml:7: serve.request", "not a known key",
               ExitCode::input);
  expect_error(head + "[serve]\nrate = 1.0\n", "job.toml", "needs workload = \"trace.csv\", or rate and requests");
  expect_error(head + "[serve]\nrate = 1.0\nrequests = 4\npolicy = \"fastest\"\n", "point 0",
               "decode-priority or static-batch");
  expect_error(head + "[serve]\nrate = 1.0\nrequests = 4\ncv = 2.0\n", "point 0", "cv applies to arrivals");
  expect_error(head + "[serve]\nrate = -1.0\nrequests = 4\n", "point 0", "rate must be above 0");
  expect_error(head + "[serve]\nworkload = \"t.csv\"\nrate = 1.0\n", "point 0", "rate describes a generated workload");
  expect_error(head + "[serve]\nrequests = 4\n[sweep]\nrate = [1.0]\nslots = [\"two\"]\n", "job.toml:9: sweep.slots",
               "must be an integer", ExitCode::input);
}

}  // namespace
}  // namespace lpurt::jobs
