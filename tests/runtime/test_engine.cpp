#include <gtest/gtest.h>
#include <tbb/global_control.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "chip/kernels.hpp"
#include "io/weight_source.hpp"
#include "runtime/engine.hpp"
#include "runtime/generate.hpp"

using namespace lpurt;

namespace {

partition::Plan plan_for(const chip::ModelConfig& cfg, int64_t chips, int64_t tp, int64_t pp, int64_t block) {
  partition::PlanRequest r;
  r.n_chips = chips;
  r.tp = tp;
  r.pp = pp;
  r.context = 64;
  r.block_tokens = block;
  return partition::make_plan(cfg, chip::ChipSpec{}, r);
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

const std::vector<int32_t> prompt = {3, 141, 59, 26, 35, 89, 79, 323, 84, 262, 43};  // < 512, tiny-mixtral's vocab

}  // namespace

TEST(Engine, PrefillEqualsTokenByTokenFeedingBitForBit) {
  for (const char* preset : {"tiny", "tiny-mixtral", "tiny-llama3", "tiny-qwen2", "tiny-qwen3", "tiny-qwen3-moe"}) {
    io::SyntheticModel source(chip::model_preset(preset), 11, preset);
    const auto cfg = source.config();
    runtime::Engine block_engine(plan_for(cfg, 1, 1, 1, 4), source);  // prefill in chunks of 4 tokens
    runtime::Engine single_engine(plan_for(cfg, 1, 1, 1, 1), source);
    std::vector<float> a(static_cast<std::size_t>(cfg.vocab_size)), b(a.size());
    block_engine.forward(0, prompt.data(), 0, static_cast<int64_t>(prompt.size()), a.data());
    for (std::size_t i = 0; i < prompt.size(); ++i)
      single_engine.forward(0, &prompt[i], static_cast<int64_t>(i), 1, i + 1 == prompt.size() ? b.data() : nullptr);
    EXPECT_TRUE(bit_identical(a, b)) << preset;
  }
}

TEST(Engine, EveryTensorPipelineLayoutIsBitIdenticalToOneChip) {
  io::SyntheticModel source(chip::model_preset("tiny"), 5, "tiny");
  const auto cfg = source.config();
  runtime::Engine reference(plan_for(cfg, 1, 1, 1, 8), source);
  const runtime::Generation expected = runtime::generate(reference, prompt, 6, 0);
  const int64_t layouts[][2] = {{2, 1}, {1, 2}, {2, 2}, {4, 1}, {8, 1}, {1, 4}, {4, 2}, {8, 2}, {3, 1}, {3, 4}, {6, 4}, {1, 8}, {2, 7}, {4, 5}};
  for (const auto& l : layouts) {
    runtime::Engine engine(plan_for(cfg, l[0] * l[1], l[0], l[1], 8), source);
    const runtime::Generation got = runtime::generate(engine, prompt, 6, 0);
    EXPECT_EQ(got.tokens, expected.tokens) << "tp=" << l[0] << " pp=" << l[1];
    EXPECT_TRUE(bit_identical(got.logits, expected.logits)) << "tp=" << l[0] << " pp=" << l[1];
  }
}

TEST(Engine, GeneratedTokensVary) {
  io::SyntheticModel source(chip::model_preset("tiny"), 1, "tiny");
  runtime::Engine engine(plan_for(source.config(), 1, 1, 1, 8), source);
  const runtime::Generation g = runtime::generate(engine, prompt, 16, 0);
  std::vector<int32_t> distinct = g.tokens;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  EXPECT_GE(distinct.size(), 6u);
  for (float v : g.logits) ASSERT_TRUE(std::isfinite(v));
}

TEST(Engine, EachChipReadsOnlyItsOwnSlices) {
  // Loading a tp=4 x pp=2 plan chip by chip: every chip's bytes equal its planned weight bytes, and together
  // they read the model once plus the replicated pieces (norms, wo/w_down scales, KV heads).
  io::SyntheticModel source(chip::model_preset("tiny"), 2, "tiny");
  const auto cfg = source.config();
  const partition::Plan plan = plan_for(cfg, 8, 4, 2, 4);
  for (const auto& c : plan.chips) {
    io::SyntheticModel fresh(cfg, 2, "tiny");
    chip::Shard shard(cfg, c.range, plan.shape);
    io::load_shard(fresh, shard);
    EXPECT_EQ(fresh.bytes_read(), c.sram.weight_bytes) << "chip " << c.chip;
    EXPECT_LT(fresh.bytes_read(), cfg.weight_bytes() / 4) << "chip " << c.chip;
  }
}

TEST(Engine, ResultsDoNotDependOnTheThreadCount) {
  io::SyntheticModel source(chip::model_preset("tiny"), 9, "tiny");
  auto run_with = [&](std::size_t threads) {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads);
    runtime::Engine engine(plan_for(source.config(), 2, 2, 1, 8), source);
    return runtime::generate(engine, prompt, 5, 0);
  };
  const runtime::Generation one = run_with(1), two = run_with(2), four = run_with(4);
  EXPECT_TRUE(bit_identical(one.logits, two.logits));
  EXPECT_TRUE(bit_identical(one.logits, four.logits));
}

TEST(Engine, MixtralExpertParallelLayoutsAreBitIdenticalToOneChip) {
  io::SyntheticModel source(chip::model_preset("tiny-mixtral"), 4, "tiny-mixtral");  // 4 experts, 2 per token
  const auto cfg = source.config();
  runtime::Engine reference(plan_for(cfg, 1, 1, 1, 8), source);
  const runtime::Generation expected = runtime::generate(reference, prompt, 6, 0);
  const int64_t layouts[][2] = {{2, 1}, {4, 1}, {3, 1}, {2, 2}, {1, 4}, {4, 2}, {2, 3}};
  for (const auto& l : layouts) {
    runtime::Engine engine(plan_for(cfg, l[0] * l[1], l[0], l[1], 4), source);
    const runtime::Generation got = runtime::generate(engine, prompt, 6, 0);
    EXPECT_EQ(got.tokens, expected.tokens) << "tp=" << l[0] << " pp=" << l[1];
    EXPECT_TRUE(bit_identical(got.logits, expected.logits)) << "tp=" << l[0] << " pp=" << l[1];
  }
}
