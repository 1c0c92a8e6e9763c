#include <gtest/gtest.h>

#include <algorithm>

#include "chip/error.hpp"
#include "chip/hardware.hpp"
#include "chip/model_config.hpp"
#include "chip/shard.hpp"
#include "chip/sram.hpp"

using namespace lpurt::chip;

TEST(ModelConfig, EveryPresetIsValid) {
  for (const auto& name : model_preset_names()) EXPECT_NO_THROW(model_preset(name).validate()) << name;
}

TEST(ModelConfig, PresetsHaveTheirPublishedSizes) {
  EXPECT_NEAR(static_cast<double>(model_preset("small").n_parameters()), 100e6, 5e6);
  EXPECT_NEAR(static_cast<double>(model_preset("llama2-7b").n_parameters()), 6.74e9, 0.05e9);
  EXPECT_NEAR(static_cast<double>(model_preset("llama2-70b").n_parameters()), 68.98e9, 0.1e9);
  EXPECT_NEAR(static_cast<double>(model_preset("mixtral-8x7b").n_parameters()), 46.7e9, 0.2e9);
  EXPECT_LT(model_preset("tiny").weight_bytes(), 4'000'000);
}

TEST(ModelConfig, RejectsInconsistentShapesWithTheFieldName) {
  ModelConfig c = model_preset("tiny");
  c.n_heads = 7;
  EXPECT_THROW(
      {
        try {
          c.validate();
        } catch (const ConfigError& e) {
          EXPECT_NE(std::string(e.what()).find("n_heads"), std::string::npos);
          throw;
        }
      },
      ConfigError);
  c = model_preset("tiny");
  c.vocab_size = int64_t{1} << 40;
  EXPECT_THROW(c.validate(), ConfigError);
  c = model_preset("tiny");
  c.n_kv_heads = 3;
  EXPECT_THROW(c.validate(), ConfigError);
}

TEST(ModelConfig, TensorPathsFollowSpec) {
  EXPECT_EQ(tensor_path({TensorKind::wq, 3}), "/layers/3/wq");
  EXPECT_EQ(tensor_path({TensorKind::w_down, 1, 6}), "/layers/1/experts/6/w_down");
  EXPECT_EQ(tensor_path({TensorKind::lm_head}), "/lm_head");
  const ModelConfig c = model_preset("tiny");
  EXPECT_EQ(static_cast<int64_t>(model_tensors(c).size()), 3 + 9 * c.n_layers);
}

TEST(Hardware, DefaultsComeFromTheReferenceSheet) {
  const ChipSpec datasheet = hardware_preset("groq-lpu-v1-datasheet");
  EXPECT_EQ(datasheet.sram_bytes, 220 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(datasheet.clock_hz, 900e6);
  EXPECT_NEAR(datasheet.weight_stream_bytes_per_s(), 18.4e12, 0.05e12);
  for (const auto& p : parameter_infos()) EXPECT_FALSE(p.source.empty()) << p.name;
}

TEST(Hardware, TheCalibratedPresetDiffersFromTheDatasheetOnlyInDeclaredUncertainParametersWithinTheirBrackets) {
  const ChipSpec calibrated = hardware_preset("groq-lpu-v1");
  const ChipSpec datasheet = hardware_preset("groq-lpu-v1-datasheet");
  for (const auto& p : parameter_infos()) {
    const double a = get_parameter(calibrated, p.name), b = get_parameter(datasheet, p.name);
    const auto& u = uncertain_parameters();
    const auto it = std::find_if(u.begin(), u.end(), [&](const UncertainParameter& x) { return x.name == p.name; });
    if (it == u.end()) {
      EXPECT_EQ(a, b) << p.name << " differs between the presets but is not a declared uncertain parameter";
      continue;
    }
    EXPECT_GE(a, it->min_value) << p.name;
    EXPECT_LE(a, it->max_value) << p.name;
    EXPECT_GE(b, it->min_value) << p.name;
    EXPECT_LE(b, it->max_value) << p.name;
  }
  EXPECT_LE(uncertain_parameters().size(), 2u);  // the limit: at most two fitted constants
}

TEST(Hardware, OverridesByNameAndRejectsUnknownOrOutOfRange) {
  ChipSpec s;
  apply_assignment(s, "link_bytes_per_s = 28e9", "--set");
  EXPECT_DOUBLE_EQ(s.link_bytes_per_s, 28e9);
  EXPECT_THROW(apply_assignment(s, "nosuch=1", "--set"), ConfigError);
  EXPECT_THROW(apply_assignment(s, "clock_hz=abc", "--set"), ConfigError);
  EXPECT_THROW(apply_assignment(s, "op_latency_cycles=2.5", "--set"), ConfigError);
  EXPECT_THROW(apply_assignment(s, "sram_bytes=-1", "--set"), ConfigError);
}

TEST(Hardware, RemovedLinkCountsFailNamingTheParameter) {
  for (const char* name : {"local_links", "global_links"}) {
    ChipSpec s;
    try {
      apply_assignment(s, std::string(name) + "=7", "--set");
      FAIL() << "accepted " << name;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("\"") + name + "\" was removed"), std::string::npos) << e.what();
    }
    try {
      parse_system_file(std::string(name) + " = 4\n", "old.toml");
      FAIL() << "accepted " << name << " in a system file";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("old.toml:1"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

TEST(Hardware, OutOfRangeMessagesPrintNumbersShort) {
  ChipSpec s;
  try {
    apply_assignment(s, "clock_hz=1e300", "--set");
    FAIL() << "accepted clock_hz=1e300";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("clock_hz = 1e+300 is outside 1e+06 .. 1e+11 Hz"), std::string::npos)
        << e.what();
  }
}

TEST(Hardware, SystemFileNamesTheBadLine) {
  const ChipSpec s = parse_system_file("preset = \"groq-lpu-v1\"\n# comment\nsram_bytes = 1_000_000_000\n", "sys.toml");
  EXPECT_EQ(s.sram_bytes, 1'000'000'000);
  try {
    parse_system_file("clock_hz = 1e9\nbogus line\n", "sys.toml");
    FAIL() << "accepted a malformed line";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("sys.toml:2"), std::string::npos) << e.what();
  }
}

TEST(Hardware, SystemFileTakesDottedAndQuotedFactorNamesAndAByteOrderMark) {
  const ChipSpec s = parse_system_file(
      "\xEF\xBB\xBFpreset = \"groq-lpu-v1\"\ntopology = \"chain\"\nchip_speed_factor.3 = 0.5\n"
      "\"link_bandwidth_factor.0-1\" = 0.25\n",
      "sys.toml");
  EXPECT_EQ(s.topology, "chain");
  EXPECT_EQ(s.chip_speed(3), 0.5);
  EXPECT_EQ(s.link_bandwidth(1, 0), 0.25);
  const auto message_of = [](const std::string& text) {
    try {
      parse_system_file(text, "sys.toml");
    } catch (const lpurt::Error& e) {
      EXPECT_EQ(e.code(), lpurt::ExitCode::input) << e.what();
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message_of("clock_hz = 1e9\npreset = \"groq-lpu-v1\"\n"), "sys.toml:2: preset must come before any parameter");
  EXPECT_EQ(message_of("\nclock_hz = \"fast\"\n"), "sys.toml:2: clock_hz must be a number, got string");
  EXPECT_NE(message_of("warp = 9\n").find("sys.toml:1: unknown hardware parameter \"warp\""), std::string::npos);
  EXPECT_THROW(parse_system_file("clock_hz = 1e3\n", "sys.toml"), ConfigError);  // in range is another matter
}

TEST(Sram, OverflowSaysByHowMuch) {
  ChipSpec s;
  SramUsage u;
  u.weight_bytes = s.sram_bytes;
  u.program_bytes = 10;
  try {
    check_fits(u, s, "chip 3");
    FAIL();
  } catch (const CapacityError& e) {
    EXPECT_NE(std::string(e.what()).find("chip 3"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("over by 10 bytes"), std::string::npos) << e.what();
  }
}

TEST(Sram, ShardUsageCountsWeightsExactly) {
  const ModelConfig c = model_preset("tiny");
  ShardShape shape;
  shape.context = 16;
  const SramUsage u = shard_sram_usage(c, whole_model(c), shape, ChipSpec{});
  EXPECT_EQ(u.weight_bytes, c.weight_bytes());
  EXPECT_EQ(u.kv_cache_bytes, 2 * c.n_layers * c.kv_size() * 16 * ChipSpec{}.kv_bytes_per_value);
}
