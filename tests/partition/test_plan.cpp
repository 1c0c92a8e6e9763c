#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <tuple>

#include "partition/plan.hpp"
#include "partition/timing.hpp"

using namespace lpurt;
using namespace lpurt::partition;
using chip::TensorKind;

namespace {
PlanRequest request(int64_t chips, int64_t tp = 0, int64_t pp = 0) {
  PlanRequest r;
  r.n_chips = chips;
  r.tp = tp;
  r.pp = pp;
  return r;
}
}  // namespace

TEST(Planner, SplitsHeadsFfnAndVocabIntoContiguousRanges) {
  const auto cfg = chip::model_preset("tiny");
  const Plan p = make_plan(cfg, chip::ChipSpec{}, request(8, 4, 2));
  ASSERT_EQ(p.n_chips(), 8);
  int64_t heads = 0, ffn = 0, vocab = 0;
  for (int64_t t = 0; t < 4; ++t) {
    heads += p.at(0, t).range.n_heads();
    ffn += p.at(1, t).range.n_ffn();
    vocab += p.at(1, t).range.n_vocab();
    EXPECT_EQ(p.at(0, t).range.n_vocab(), 0);
  }
  EXPECT_EQ(heads, cfg.n_heads);
  EXPECT_EQ(ffn, cfg.intermediate_size);
  EXPECT_EQ(vocab, cfg.vocab_size);
  EXPECT_EQ(p.at(0, 0).range.part_begin, 0);
  EXPECT_EQ(p.at(1, 0).range.part_end, chip::n_parts(cfg));
}

TEST(Planner, ReplicatesKvHeadsWhenTpExceedsThem) {
  const auto cfg = chip::model_preset("tiny");  // 8 heads, 2 KV heads
  const Plan p = make_plan(cfg, chip::ChipSpec{}, request(8, 8, 1));
  for (int64_t t = 0; t < 8; ++t) {
    EXPECT_EQ(p.at(0, t).range.n_kv_heads(cfg), 1);
    EXPECT_EQ(p.at(0, t).range.kv_head_begin(cfg), t / 4);
  }
}

TEST(Planner, ImpossibleLayoutsFailWithTheReason) {
  const auto cfg = chip::model_preset("tiny");
  auto message = [&](const PlanRequest& r) {
    try {
      make_plan(cfg, chip::ChipSpec{}, r);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(request(16, 16, 1)).find("exceeds the model's 8 attention heads"), std::string::npos);
  EXPECT_NE(message(request(6, 4, 2)).find("needs 8 chips, more than the system's 6"), std::string::npos);
  EXPECT_NE(message(request(0)).find("at least 1"), std::string::npos);
}

TEST(Planner, SlicesExpertsByFfnColumnsWhenAStageHasMoreChipsThanExperts) {
  auto cfg = chip::model_preset("tiny-mixtral");  // 4 experts of 128 FFN columns
  cfg.n_heads = 8;
  for (int64_t tp : {6, 8}) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    const Plan p = make_plan(cfg, chip::ChipSpec{}, request(tp, tp, 1));
    // Every chip holds columns of one expert; each expert's holders tile its columns in order.
    std::vector<int64_t> next_column(static_cast<std::size_t>(cfg.n_experts), 0);
    for (int64_t t = 0; t < tp; ++t) {
      const chip::ShardRange& r = p.at(0, t).range;
      ASSERT_EQ(r.n_experts(), 1);
      EXPECT_GT(r.n_ffn(), 0);
      EXPECT_EQ(r.ffn_begin, next_column[static_cast<std::size_t>(r.expert_begin)]);
      next_column[static_cast<std::size_t>(r.expert_begin)] = r.ffn_end;
    }
    for (int64_t columns : next_column) EXPECT_EQ(columns, cfg.ffn_size());
  }
  // With no more chips than experts, experts stay whole.
  const Plan whole = make_plan(cfg, chip::ChipSpec{}, request(2, 2, 1));
  EXPECT_EQ(whole.at(0, 1).range.expert_begin, 2);
  EXPECT_EQ(whole.at(0, 1).range.n_ffn(), cfg.ffn_size());
}

TEST(Planner, MoreChipsThanExpertColumnsFailsNamingTheLimit) {
  auto cfg = chip::model_preset("tiny-mixtral");
  cfg.n_heads = 16, cfg.n_experts = 2, cfg.n_experts_per_token = 1, cfg.intermediate_size = 4;
  try {
    make_plan(cfg, chip::ChipSpec{}, request(16, 16, 1));
    FAIL() << "tp 16 over 2 experts of 4 columns was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tp=16 exceeds the model's 2 experts x 4 FFN columns"), std::string::npos) << e.what();
  }
}

TEST(Planner, ModelThatDoesNotFitSaysHowManyChipsItNeeds) {
  const auto cfg = chip::model_preset("llama2-7b");
  try {
    make_plan(cfg, chip::ChipSpec{}, request(1));
    FAIL();
  } catch (const chip::CapacityError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("needs at least"), std::string::npos) << m;
    // 6.7 GB of weights + 2.1 GB of float32 KV at 4096 context over ~225 MB per chip: about 40 chips by
    // capacity; parts do not divide evenly over stages, so the smallest layout that fits has a few more.
    const auto pos = m.find("needs at least ") + 15;
    const int64_t n = std::stoll(m.substr(pos));
    EXPECT_GE(n, 39);
    EXPECT_LE(n, 60);
    // The count is exact: it fits, and one chip fewer does not.
    EXPECT_NO_THROW(make_plan(cfg, chip::ChipSpec{}, request(n)));
    EXPECT_THROW(make_plan(cfg, chip::ChipSpec{}, request(n - 1)), chip::CapacityError);
  }
}

// The planner's speed is measured by bench/simulator.sh, not here: a wall-clock bound in a unit test
// flakes under sanitizers on shared cores.
TEST(Planner, SearchPicksAFeasibleLayoutForLlama70bOn640ChipsAndReportsIdleChips) {
  // At batch 1 more stages only add hops: the fastest pipeline uses as few stages as fit, and the rest
  // of the 640 chips stay idle.
  const auto cfg = chip::model_preset("llama2-70b");
  PlanRequest r = request(640);
  r.context = 2048;
  const Plan p = make_plan(cfg, chip::ChipSpec{}, r);
  EXPECT_LE(p.tp * p.pp * p.replicas, 640);
  EXPECT_EQ(p.n_chips(), p.tp * p.pp * p.replicas);
  EXPECT_EQ(p.system_chips, 640);
  EXPECT_EQ(p.n_chips() + p.idle_chips(), 640);
  EXPECT_GT(p.idle_chips(), 0);
  EXPECT_LE(p.sram_bytes_max(), chip::ChipSpec{}.sram_bytes);
  // One stage fewer does not fit.
  PlanRequest fewer = r;
  fewer.tp = p.tp, fewer.pp = p.pp - 1, fewer.replicas = 1;
  EXPECT_THROW(make_plan(cfg, chip::ChipSpec{}, fewer), chip::CapacityError);
}

TEST(Timing, IsAPureFunctionOfThePlan) {
  const auto cfg = chip::model_preset("tiny");
  const Plan a = make_plan(cfg, chip::ChipSpec{}, request(4, 2, 2));
  const Plan b = make_plan(cfg, chip::ChipSpec{}, request(4, 2, 2));
  const ModelledTimes ta = modelled_times(a, 20, 10), tb = modelled_times(b, 20, 10);
  EXPECT_EQ(ta.prefill_cycles, tb.prefill_cycles);
  EXPECT_EQ(ta.decode_cycles, tb.decode_cycles);
  EXPECT_GT(ta.ttft_s, 0.0);
  EXPECT_GT(ta.tpot_s, 0.0);
}

TEST(Timing, DecodeOnOneChipIsBoundByWeightStreaming) {
  // A decode step streams every weight once: at least weight_bytes / stream bandwidth.
  const auto cfg = chip::model_preset("small");
  PlanRequest r = request(1);
  r.context = 64;
  const Plan p = make_plan(cfg, chip::ChipSpec{}, r);
  const double bound_s = static_cast<double>(cfg.weight_bytes() - 2 * cfg.vocab_size * cfg.hidden_size) /
                         chip::ChipSpec{}.weight_stream_bytes_per_s();
  const double step_s = static_cast<double>(decode_step_cycles(p, 10)) / chip::ChipSpec{}.clock_hz;
  EXPECT_GE(step_s, bound_s);
  EXPECT_LT(step_s, 2.0 * bound_s + 20e-6);
}

TEST(Planner, Llama70bOn576ChipsSplitsStagesInsideLayers) {
  // 576 = tp 8 x pp 72 over 80 layers: some stages must end inside a layer.
  const auto cfg = chip::model_preset("llama2-70b");
  const Plan p = make_plan(cfg, chip::ChipSpec{}, request(576, 8, 72));
  EXPECT_EQ(p.tp, 8);
  EXPECT_EQ(p.pp, 72);
  EXPECT_LE(p.sram_bytes_max(), chip::ChipSpec{}.sram_bytes);
  bool split_inside_a_layer = false;
  for (int64_t s = 0; s <= p.pp; ++s) split_inside_a_layer |= chip::part_kind(p.stage_part_begin[static_cast<std::size_t>(s)]) != chip::LayerPart::attention;
  EXPECT_TRUE(split_inside_a_layer);
  EXPECT_EQ(p.stage_part_begin.back(), chip::n_parts(cfg));
}

TEST(Planner, BalancedStagesAreNonEmptyAndNoHeavierThanAnEvenSplit) {
  const auto cfg = chip::model_preset("llama2-70b");
  const int64_t n = chip::n_parts(cfg);
  // Weight of parts [i, j) on stage s of pp, as the balancer counts it.
  auto heaviest = [&](const std::vector<int64_t>& begin, int64_t pp) {
    int64_t worst = 0;
    for (int64_t s = 0; s < pp; ++s) {
      chip::ShardRange r;
      r.part_begin = begin[static_cast<std::size_t>(s)], r.part_end = begin[static_cast<std::size_t>(s + 1)];
      r.head_end = cfg.n_heads, r.ffn_end = cfg.intermediate_size;
      if (s == 0) r.embed_end = cfg.vocab_size;
      if (s == pp - 1) r.vocab_end = cfg.vocab_size, r.final_norm = true;
      chip::ShardShape shape;
      shape.context = 1;
      worst = std::max(worst, chip::shard_sram_usage(cfg, r, shape, chip::ChipSpec{}).weight_bytes);
    }
    return worst;
  };
  for (int64_t pp : {1, 7, 72, 80, 121, 160}) {
    const auto begin = balance_stages(cfg, pp);
    ASSERT_EQ(static_cast<int64_t>(begin.size()), pp + 1);
    EXPECT_EQ(begin.front(), 0);
    EXPECT_EQ(begin.back(), n);
    for (int64_t s = 0; s < pp; ++s) EXPECT_LT(begin[static_cast<std::size_t>(s)], begin[static_cast<std::size_t>(s + 1)]);
    std::vector<int64_t> even;
    for (int64_t s = 0; s <= pp; ++s) even.push_back(split_begin(n, pp, s));
    EXPECT_LE(heaviest(begin, pp), heaviest(even, pp)) << "pp=" << pp;
  }
}

namespace {
/// The smallest heaviest stage over every split of the model's parts into pp stages that begin only where
/// `may_begin` allows, by exhaustive dynamic programming (no bisection): the balancer's first objective.
int64_t heaviest_by_brute_force(const chip::ModelConfig& cfg, int64_t pp, const std::function<bool(int64_t)>& may_begin) {
  const int64_t n = chip::n_parts(cfg);
  // Each part's bytes, and the first and last stage's extra tensors, from the slices chips hold.
  std::vector<int64_t> prefix(static_cast<std::size_t>(n + 1), 0);
  for (int64_t i = 0; i < n; ++i) {
    chip::ShardRange r = chip::whole_model(cfg);
    r.part_begin = i, r.part_end = i + 1, r.embed_end = r.vocab_end = 0, r.final_norm = false;
    prefix[static_cast<std::size_t>(i + 1)] = prefix[static_cast<std::size_t>(i)] + chip::slice_weight_bytes(cfg, r);
  }
  chip::ShardRange ends = chip::whole_model(cfg);
  ends.part_end = 0;
  const int64_t ends_bytes = chip::slice_weight_bytes(cfg, ends);
  ends.vocab_end = 0, ends.final_norm = false;
  const int64_t head = chip::slice_weight_bytes(cfg, ends), tail = ends_bytes - head;
  auto weight = [&](int64_t s, int64_t i, int64_t j) {
    return prefix[static_cast<std::size_t>(j)] - prefix[static_cast<std::size_t>(i)] + (s == 0 ? head : 0) + (s == pp - 1 ? tail : 0);
  };
  constexpr int64_t infinite = std::numeric_limits<int64_t>::max();
  // best[s][j]: stages 0..s holding parts [0, j).
  std::vector<std::vector<int64_t>> best(static_cast<std::size_t>(pp), std::vector<int64_t>(static_cast<std::size_t>(n + 1), infinite));
  for (int64_t j = 1; j <= n; ++j)
    if (j == n || may_begin(j)) best[0][static_cast<std::size_t>(j)] = weight(0, 0, j);
  for (int64_t s = 1; s < pp; ++s)
    for (int64_t j = 1; j <= n; ++j) {
      if (j != n && !may_begin(j)) continue;
      for (int64_t i = 1; i < j; ++i) {
        const int64_t prev = best[static_cast<std::size_t>(s - 1)][static_cast<std::size_t>(i)];
        if (prev == infinite || !may_begin(i)) continue;
        best[static_cast<std::size_t>(s)][static_cast<std::size_t>(j)] =
            std::min(best[static_cast<std::size_t>(s)][static_cast<std::size_t>(j)], std::max(prev, weight(s, i, j)));
      }
    }
  return best[static_cast<std::size_t>(pp - 1)][static_cast<std::size_t>(n)];
}

/// The heaviest stage of a split, weighed as chips holding whole parts store them.
int64_t heaviest_of(const chip::ModelConfig& cfg, const std::vector<int64_t>& begin) {
  const auto pp = static_cast<int64_t>(begin.size()) - 1;
  int64_t worst = 0;
  for (int64_t s = 0; s < pp; ++s) {
    chip::ShardRange r = chip::whole_model(cfg);
    r.part_begin = begin[static_cast<std::size_t>(s)], r.part_end = begin[static_cast<std::size_t>(s + 1)];
    if (s != 0) r.embed_end = 0;
    if (s != pp - 1) r.vocab_end = 0, r.final_norm = false;
    worst = std::max(worst, chip::slice_weight_bytes(cfg, r));
  }
  return worst;
}
}  // namespace

TEST(Planner, BalancedStagesAreTheLightestSplitAndMayCutDenseAndMoeFfns) {
  for (const char* preset : {"tiny", "tiny-mixtral", "tiny-qwen3-moe", "tinyllama-1.1b"}) {
    const auto cfg = chip::model_preset(preset);
    for (int64_t pp = 1; pp <= chip::n_parts(cfg); ++pp) {
      const auto begin = balance_stages(cfg, pp);
      ASSERT_EQ(static_cast<int64_t>(begin.size()), pp + 1);
      EXPECT_EQ(heaviest_of(cfg, begin), heaviest_by_brute_force(cfg, pp, [](int64_t) { return true; }))
          << preset << " pp=" << pp;
    }
  }
  // An MoE FFN is cut like a dense one: with a stage per part, stages begin at its w_down half.
  const auto moe = chip::model_preset("tiny-mixtral");
  const Plan plan = make_plan(moe, chip::ChipSpec{}, request(chip::n_parts(moe), 1, chip::n_parts(moe)));
  EXPECT_EQ(plan.stage_part_begin[2], chip::part_index(0, chip::LayerPart::ffn_out));
  EXPECT_THROW(make_plan(moe, chip::ChipSpec{}, request(chip::n_parts(moe) + 1, 1, chip::n_parts(moe) + 1)), PlanError);
}

TEST(Planner, CutsInsideTheFfnLightenTheHeaviestStageOfLlama70bOn72Stages) {
  // The deployed tp 8 x pp 72: an FFN part weighs 4.7 attention parts, so with cuts only between whole
  // parts some stages hold two FFNs; cutting an FFN between its gate/up and w_down halves spreads them.
  const auto cfg = chip::model_preset("llama2-70b");
  const auto begin = balance_stages(cfg, 72);
  const int64_t whole_parts =
      heaviest_by_brute_force(cfg, 72, [](int64_t i) { return chip::part_kind(i) != chip::LayerPart::ffn_out; });
  EXPECT_LT(heaviest_of(cfg, begin), whole_parts * 90 / 100);
  EXPECT_TRUE(std::any_of(begin.begin(), begin.end(), [](int64_t i) { return chip::part_kind(i) == chip::LayerPart::ffn_out; }));
}

TEST(Planner, Mixtral8x7bOn576ChipsCutsInsideMoeFfnsForALighterHeaviestStage) {
  // Mixtral 8x7B at its 32K context on 576 chips, batch 1 (docs/VALIDATION.md section 7): an FFN part of
  // eight experts outweighs its attention many times, so with cuts only between whole FFNs some stages
  // hold two of them; a stage that begins at an MoE FFN's w_down half spreads them.
  const auto cfg = chip::model_preset("mixtral-8x7b");
  auto whole_ffns = [](int64_t i) { return chip::part_kind(i) != chip::LayerPart::ffn_out; };
  auto cuts_inside_ffn = [](const std::vector<int64_t>& begin) {
    return std::any_of(begin.begin(), begin.end(),
                       [](int64_t i) { return chip::part_kind(i) == chip::LayerPart::ffn_out; });
  };
  // The layout the planner chose with MoE FFNs kept whole, tp 8 x pp 33.
  const auto begin = balance_stages(cfg, 33);
  EXPECT_LT(heaviest_of(cfg, begin), heaviest_by_brute_force(cfg, 33, whole_ffns));
  EXPECT_TRUE(cuts_inside_ffn(begin));
  // The planner's layout with MoE cuts asked for.
  PlanRequest cut = request(576);
  cut.moe_ffn_cuts = MoeFfnCuts::allowed;
  const Plan plan = make_plan(cfg, chip::ChipSpec{}, cut);
  EXPECT_EQ(plan.shape.context, 32768);
  EXPECT_LT(heaviest_of(cfg, plan.stage_part_begin), heaviest_by_brute_force(cfg, plan.pp, whole_ffns));
  ASSERT_TRUE(cuts_inside_ffn(plan.stage_part_begin));
  // Left to choose (--moe-ffn-cuts auto), the planner models both splits and keeps the faster: its time per
  // output token is no worse than either's.
  const Plan whole = [&] {
    PlanRequest r = request(576);
    r.moe_ffn_cuts = MoeFfnCuts::whole;
    return make_plan(cfg, chip::ChipSpec{}, r);
  }();
  const Plan chosen = make_plan(cfg, chip::ChipSpec{}, request(576));
  const int64_t chosen_period = decode_period_cycles(chosen, chosen.shape.context - 1);
  EXPECT_LE(chosen_period, decode_period_cycles(plan, plan.shape.context - 1));
  EXPECT_LE(chosen_period, decode_period_cycles(whole, whole.shape.context - 1));
  // Its programs, with the hand-offs into w_down halves (routing, slot amax, held slots' SiLU rows), verify.
  const Topology topology = topology_for(plan);
  for (const auto& blocks : {prefill_blocks(12, std::min<int64_t>(8, plan.shape.block_tokens)), decode_blocks()}) {
    const Program p = build_program(plan, topology, blocks);
    EXPECT_NO_THROW(verify(p, compute_timeline(p, plan, 100)));
    int64_t moe_hand_offs = 0;
    for (const Op& op : p.ops)
      moe_hand_offs += op.kind == OpKind::send &&
                       (op.payload == Payload::activations_ffn || op.payload == Payload::activations_ffn_share);
    EXPECT_GT(moe_hand_offs, 0);
  }
}

TEST(Split, TheFfnHalvesHoldGateUpAndDownRespectively) {
  const auto cfg = chip::model_preset("tiny");
  chip::ShardRange in = chip::whole_model(cfg), out = in;
  in.part_begin = chip::part_index(1, chip::LayerPart::ffn_in), in.part_end = in.part_begin + 1;
  out.part_begin = in.part_end, out.part_end = out.part_begin + 1;
  for (chip::ShardRange* r : {&in, &out}) r->embed_end = r->vocab_end = 0, r->final_norm = false;
  std::vector<TensorKind> in_kinds, out_kinds;
  for (const auto& s : chip::tensor_slices(cfg, in)) in_kinds.push_back(s.tensor.kind);
  for (const auto& s : chip::tensor_slices(cfg, out)) out_kinds.push_back(s.tensor.kind);
  EXPECT_EQ(in_kinds, (std::vector<TensorKind>{TensorKind::ffn_norm, TensorKind::w_gate, TensorKind::w_up}));
  EXPECT_EQ(out_kinds, std::vector<TensorKind>{TensorKind::w_down});
  EXPECT_EQ(in.n_layers(), 1);
  EXPECT_EQ(in.n_attention_layers(), 0);
  EXPECT_FALSE(out.has_ffn_in(1));
  EXPECT_TRUE(out.has_ffn_out(1));
}

TEST(Planner, TwoHundredChipsForLlama70bSaysHowManyAreNeeded) {
  try {
    make_plan(chip::model_preset("llama2-70b"), chip::ChipSpec{}, request(200));
    FAIL();
  } catch (const chip::CapacityError& e) {
    // 69 GB of weights and the FP16 KV cache fill 313 chips; the smallest layout that fits is named.
    const std::string m = e.what();
    EXPECT_NE(m.find("fill 313 chips"), std::string::npos) << m;
    const auto pos = m.find("needs at least ");
    ASSERT_NE(pos, std::string::npos) << m;
    const int64_t n = std::stoll(m.substr(pos + 15));
    EXPECT_GE(n, 313);
    const auto tp_pos = m.find("tp ");
    ASSERT_NE(tp_pos, std::string::npos) << m;
    PlanRequest r = request(n);
    r.tp = std::stoll(m.substr(tp_pos + 3));
    r.pp = n / r.tp;
    EXPECT_NO_THROW(make_plan(chip::model_preset("llama2-70b"), chip::ChipSpec{}, r));
  }
}

TEST(Planner, UsesFewerChipsThanTheSystemHasWhenMoreWouldIdle) {
  // 17 chips for the tiny model at batch 1: no layout uses all 17 (8 layer parts, 8 heads); one pipeline
  // runs on some of them and the rest are reported idle.
  const auto cfg = chip::model_preset("tiny");
  const Plan p = make_plan(cfg, chip::ChipSpec{}, request(17));
  EXPECT_EQ(p.replicas, 1);
  EXPECT_EQ(p.system_chips, 17);
  EXPECT_EQ(p.idle_chips(), 17 - p.tp * p.pp);
  EXPECT_GT(p.idle_chips(), 0);
}

TEST(Planner, AFixedLayoutLargerThanTheSystemSaysWhy) {
  PlanRequest r = request(17, 4, 4);
  r.replicas = 2;
  try {
    make_plan(chip::model_preset("tiny"), chip::ChipSpec{}, r);
    FAIL();
  } catch (const PlanError& e) {
    EXPECT_NE(std::string(e.what()).find("needs 32 chips, more than the system's 17"), std::string::npos) << e.what();
  }
}

TEST(Planner, TensorParallelismCrossesNodes) {
  // tp 16 over two nodes of 8: the collectives route over the inter-node links.
  const auto cfg = chip::model_preset("tinyllama-1.1b");
  ASSERT_GE(cfg.n_heads, 16);
  PlanRequest r = request(32, 16, 2);
  r.context = 64;
  const Plan p = make_plan(cfg, chip::ChipSpec{}, r);
  EXPECT_EQ(p.tp, 16);
  const Topology topology = topology_for(p);
  EXPECT_GT(topology.hop_count(p.at(0, 0).chip, p.at(0, 15).chip), 1);
  const Program decode = build_program(p, topology, decode_blocks());
  EXPECT_NO_THROW(verify(decode, compute_timeline(decode, p, 10)));
}

TEST(Planner, TensorParallelGroupsStayOffDragonflyRackBoundaries) {
  // 576 chips: 8 racks of 72 joined by one global link per pair. Groups of 16 would straddle racks at
  // 64..79; each starts at the next rack instead, and the racks' last 8 chips stay idle.
  const auto cfg = chip::model_preset("llama2-70b");
  PlanRequest r = request(576, 16, 23);
  r.context = 4096;
  const Plan p = make_plan(cfg, chip::ChipSpec{}, r);
  std::vector<bool> taken(576, false);
  for (int64_t s = 0; s < p.pp; ++s) {
    const int64_t rack = p.at(s, 0).network_chip / 72;
    for (int64_t t = 0; t < p.tp; ++t) {
      const int64_t network = p.at(s, t).network_chip;
      ASSERT_LT(network, 576);
      EXPECT_FALSE(taken[static_cast<std::size_t>(network)]) << "network chip " << network << " twice";
      taken[static_cast<std::size_t>(network)] = true;
      EXPECT_EQ(network / 72, rack) << "stage " << s << " straddles racks";
      EXPECT_EQ(network, p.at(s, 0).network_chip + t);
    }
  }
  EXPECT_EQ(p.at(4, 0).network_chip, 72);
  // Routes follow the placement: stage 4's chips are one rack's, no global link between them.
  const Topology topology = topology_for(p);
  EXPECT_LE(topology.hop_count(p.at(4, 0).network_chip, p.at(4, 15).network_chip), 2);
  const Program decode = build_program(p, topology, decode_blocks());
  EXPECT_NO_THROW(verify(decode, compute_timeline(decode, p, 10)));
  for (const Op& op : decode.ops)
    for (int32_t h = 0; h < op.hop_count && op.layer >= 0 && op.chip / 16 == op.peer / 16; ++h) {
      const Hop& hop = decode.hops[static_cast<std::size_t>(op.hop_begin + h)];
      EXPECT_EQ(hop.from / 72, hop.to / 72) << "a tensor-parallel transfer crossed racks";
    }
}

TEST(Planner, TensorParallelGroupsArePlacedContiguouslyWhereNothingIsGained) {
  const auto cfg = chip::model_preset("llama2-70b");
  auto contiguous = [](const Plan& p) {
    for (const auto& c : p.chips)
      if (c.network_chip != c.chip) return false;
    return true;
  };
  PlanRequest r = request(576, 24, 16);  // 24 divides a rack
  r.context = 4096;
  EXPECT_TRUE(contiguous(make_plan(cfg, chip::ChipSpec{}, r)));
  r = request(256, 16, 16);  // 32 nodes: all-to-all, no racks
  r.context = 64;
  EXPECT_TRUE(contiguous(make_plan(chip::model_preset("tinyllama-1.1b"), chip::ChipSpec{}, r)));
  chip::ChipSpec chain;
  chain.topology = "chain";  // a ring of nodes: no global links
  r = request(576, 16, 23);
  r.context = 4096;
  EXPECT_TRUE(contiguous(make_plan(cfg, chain, r)));
  // 36 groups of 16 fill 576 chips only when packed: the planner keeps them contiguous.
  r = request(576, 16, 36);
  r.context = 4096;
  EXPECT_TRUE(contiguous(make_plan(cfg, chip::ChipSpec{}, r)));
}

TEST(Planner, NegativeContextSaysItMustBeAtLeastOne) {
  PlanRequest r = request(1);
  r.context = -3;
  try {
    make_plan(chip::model_preset("tiny"), chip::ChipSpec{}, r);
    FAIL();
  } catch (const PlanError& e) {
    EXPECT_STREQ(e.what(), "--context must be at least 1 (got -3)");
  }
}

TEST(Planner, Llama70bOnTheFullIscaSystemUsesReplicasForABatch) {
  // A batch of 8 requests of 128 + 128 tokens on 10,440 chips: replicas prefill the prompts in parallel.
  const auto cfg = chip::model_preset("llama2-70b");
  PlanRequest r = request(10'440);
  r.context = 2048;
  r.batch = 8;
  r.prompt_tokens = 128;
  r.output_tokens = 128;
  const Plan p = make_plan(cfg, chip::ChipSpec{}, r);
  EXPECT_LE(p.tp * p.pp * p.replicas, 10'440);
  EXPECT_GT(p.replicas, 1);
  EXPECT_LE(p.replicas, 8);
  EXPECT_LE(p.sram_bytes_max(), chip::ChipSpec{}.sram_bytes);
}

TEST(Timing, BatchFillsThePipelineUntilTheBusiestStageLimitsIt) {
  const auto cfg = chip::model_preset("tiny");
  auto times = [&](int64_t batch) {
    PlanRequest r = request(4, 1, 4);
    r.batch = batch;
    r.context = 64;
    return modelled_times(make_plan(cfg, chip::ChipSpec{}, r), 8, 4);
  };
  const ModelledTimes one = times(1), two = times(2), many = times(32);
  // Two sequences fit in the pipeline's latency: each user is as fast as alone, the system twice as fast.
  EXPECT_DOUBLE_EQ(two.tpot_s, one.tpot_s);
  EXPECT_DOUBLE_EQ(two.tokens_per_s_system, 2 * one.tokens_per_s_system);
  // Far more sequences than stages: the busiest stage sets the pace, users slow down, the system saturates.
  EXPECT_GT(many.tpot_s, one.tpot_s);
  EXPECT_GT(many.tokens_per_s_system, two.tokens_per_s_system);
  EXPECT_LT(many.tokens_per_s_system, 32 * one.tokens_per_s_system);
  // Every prompt is prefilled before the first token of the last sequence: TTFT grows with the batch.
  EXPECT_GT(many.ttft_s, one.ttft_s);
}

// The planner's choice against every layout tried by hand: with the request known, the lowest latency
// of the whole request (TTFT + (K - 1) x TPOT) wins; without it, the lowest TPOT.
TEST(Planner, ChoosesTheLayoutWithTheLowestRequestLatency) {
  const auto cfg = chip::model_preset("tiny");
  const chip::ChipSpec hw;
  const int64_t prompt = 48, tokens = 3;
  int64_t objectives_disagree = 0;
  for (const int64_t chips : {4, 6, 8, 12, 16, 24}) {
    for (const int64_t batch : {1, 4}) {
      PlanRequest r = request(chips);
      r.batch = batch;
      r.context = 64;
      r.block_tokens = 8;
      // Every layout of at most `chips` chips; ties to fewer chips, then smaller tp, fewer replicas, fewer stages.
      using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>;  // objective, chips, tp, replicas, pp
      Key best_latency{std::numeric_limits<int64_t>::max(), 0, 0, 0, 0}, best_period = best_latency;
      std::string by_latency, by_period;
      for (int64_t tp = 1; tp <= std::min<int64_t>(chips, 8); ++tp)
        for (int64_t replicas = 1; tp * replicas <= chips; ++replicas)
          for (int64_t pp = 1; pp <= chip::n_parts(cfg) && tp * pp * replicas <= chips; ++pp) {
            PlanRequest fixed = r;
            fixed.tp = tp, fixed.pp = pp, fixed.replicas = replicas;
            Plan p;
            try {
              p = make_plan(cfg, hw, fixed);
            } catch (const Error&) {
              continue;
            }
            const int64_t period = decode_period_cycles(p, p.shape.context - 1);
            const Program prefill = build_program(p, topology_for(p), batch_prefill_blocks(p, prompt));
            const int64_t latency = compute_timeline(prefill, p, 0).makespan_cycles + (tokens - 1) * period;
            const std::string name = std::to_string(tp) + "x" + std::to_string(pp) + "x" + std::to_string(replicas);
            const Key period_key{period, tp * pp * replicas, tp, replicas, pp};
            const Key latency_key{latency, tp * pp * replicas, tp, replicas, pp};
            if (period_key < best_period) best_period = period_key, by_period = name;
            if (latency_key < best_latency) best_latency = latency_key, by_latency = name;
          }
      auto chosen = [&](const PlanRequest& q) {
        const Plan p = make_plan(cfg, hw, q);
        return std::to_string(p.tp) + "x" + std::to_string(p.pp) + "x" + std::to_string(p.replicas);
      };
      PlanRequest with_request = r;
      with_request.prompt_tokens = prompt, with_request.output_tokens = tokens;
      EXPECT_EQ(chosen(with_request), by_latency) << chips << " chips, batch " << batch;
      EXPECT_EQ(chosen(r), by_period) << chips << " chips, batch " << batch;
      objectives_disagree += by_latency != by_period;
    }
  }
  EXPECT_GT(objectives_disagree, 0);  // the cases above include some where the objective matters
}

TEST(Planner, Mixtral8x7bAtItsFullContextPlansOn576Chips) {
  // Groq served it with its 32K context on 576 chips. With the deployed FP16 KV cache a layout within a
  // node fits; with the host's float32 KV cache and activations too, with stages that begin inside MoE
  // FFNs (kept whole, pp stopped at 2 x 32 parts and only tensor parallelism across nodes fitted).
  const auto cfg = chip::model_preset("mixtral-8x7b");
  const Plan p = make_plan(cfg, chip::ChipSpec{}, request(576));
  EXPECT_EQ(p.shape.context, 32768);
  EXPECT_LE(p.n_chips(), 576);
  EXPECT_LE(p.sram_bytes_max(), chip::ChipSpec{}.sram_bytes);
  chip::ChipSpec float32_values;
  float32_values.kv_bytes_per_value = 4, float32_values.activation_bytes_per_value = 4;
  const Plan wide = make_plan(cfg, float32_values, request(576));
  EXPECT_EQ(wide.shape.context, 32768);
  EXPECT_LE(wide.n_chips(), 576);
  EXPECT_LE(wide.tp, Topology::chips_per_node);
  EXPECT_TRUE(std::any_of(wide.stage_part_begin.begin(), wide.stage_part_begin.end(),
                          [](int64_t i) { return chip::part_kind(i) == chip::LayerPart::ffn_out; }));
  EXPECT_LE(wide.sram_bytes_max(), float32_values.sram_bytes);
}

TEST(Planner, TheSmallestSystemNamedIsLargerThanTheOneGivenAndFits) {
  // "needs at least N chips" always names the smallest system that fits, larger than the one given.
  for (const char* model : {"llama2-7b", "llama2-70b", "mixtral-8x7b"})
    for (const int64_t chips : {1, 8, 64, 200, 400}) {
      const auto cfg = chip::model_preset(model);
      try {
        make_plan(cfg, chip::ChipSpec{}, request(chips));
      } catch (const chip::CapacityError& e) {
        const std::string m = e.what();
        const auto pos = m.find("needs at least ");
        ASSERT_NE(pos, std::string::npos) << m;
        const int64_t needed = std::stoll(m.substr(pos + 15));
        EXPECT_GT(needed, chips) << model << " on " << chips << ": " << m;
        EXPECT_NO_THROW(make_plan(cfg, chip::ChipSpec{}, request(needed))) << model << " on " << needed;
        // And it is the smallest: one chip fewer has no layout, with tp across nodes or not.
        EXPECT_THROW(make_plan(cfg, chip::ChipSpec{}, request(needed - 1)), chip::CapacityError) << model << " on " << needed - 1;
      }
    }
}

// The planner models a replica's prefill of n prompts from two one-block programs chained, never the
// program of the n prompts: chaining must give its makespan exactly, and the bound must not exceed it.
TEST(Planner, ChainedBlocksGiveTheMakespanOfTheWholePrefillProgram) {
  const auto cfg = chip::model_preset("tiny");
  const chip::ChipSpec hw;
  int64_t layouts = 0;
  for (const int64_t tp : {1, 2, 3, 4, 8})
    for (const int64_t pp : {1, 2, 3, 5})
      for (const int64_t prompt : {5, 48, 61}) {
        PlanRequest r = request(tp * pp + 5, tp, pp);  // idle chips: routes may cross them
        r.replicas = 1, r.context = 64, r.block_tokens = 16;
        const Plan plan = make_plan(cfg, hw, r);
        const Topology topology = topology_for(plan);
        const std::vector<Block> blocks = prefill_blocks(prompt, r.block_tokens);
        const Block& last = blocks.back();
        const Program last_program = build_program(plan, topology, {{0, last.n_tokens, true, 0}});
        const Program middle_program = build_program(plan, topology, {{0, r.block_tokens, false, 0}});
        const ChainedSolver::Link last_link(last_program, plan), middle_link(middle_program, plan);
        const auto last_uses = resource_uses(last_program, compute_timeline(last_program, plan, last.position_offset));
        const auto first_uses = resource_uses(blocks.size() > 1 ? middle_program : last_program,
                                              compute_timeline(blocks.size() > 1 ? middle_program : last_program, plan, 0));
        for (const int64_t sequences : {1, 2, 4}) {
          std::vector<Block> all;
          ChainedSolver chained(plan.n_chips());
          for (int64_t s = 0; s < sequences; ++s)
            for (std::size_t b = 0; b < blocks.size(); ++b) {
              all.push_back(blocks[b]);
              chained.append(b + 1 < blocks.size() ? middle_link : last_link, blocks[b].position_offset);
            }
          const Program whole = build_program(plan, topology, all);
          const Timeline timeline = compute_timeline(whole, plan, 0);
          EXPECT_EQ(chained.makespan_cycles(), timeline.makespan_cycles)
              << "tp " << tp << " pp " << pp << " prompt " << prompt << " sequences " << sequences;
          // Every unit and link: first use, then all its work, then its chain in the last block.
          const auto middle_blocks = static_cast<int64_t>(blocks.size()) - 1;
          const auto middle_uses = resource_uses(middle_program, compute_timeline(middle_program, plan, 0));
          for (const auto& [key, use] : last_uses) {
            const auto first = first_uses.find(key);
            const auto middle = middle_uses.find(key);
            const int64_t busy = middle_blocks * (middle != middle_uses.end() ? middle->second.busy_cycles : 0) + use.busy_cycles;
            EXPECT_LE((first != first_uses.end() ? first->second.head_cycles : 0) + sequences * busy + use.tail_cycles,
                      timeline.makespan_cycles);
          }
          ++layouts;
        }
      }
  EXPECT_EQ(layouts, 5 * 4 * 3 * 3);
}

TEST(Timing, ChainedBatchPrefillEqualsTheWholeProgramOnEveryLayout) {
  // Replicas take turns (sequence b on replica b % replicas), chips and links may be slowed, prompts may
  // end in a short block, stages may span several nodes: the chained makespan is the program's.
  chip::ModelConfig cfg = chip::model_preset("tiny");
  cfg.hidden_size = 256, cfg.n_heads = 32, cfg.n_kv_heads = 8, cfg.n_layers = 2;
  chip::ChipSpec slowed;
  slowed.chip_speed_factors[3] = 0.5;
  slowed.link_bandwidth_factors[{0, 1}] = 0.25;
  int64_t cases = 0;
  for (const chip::ChipSpec& hw : {chip::ChipSpec{}, slowed})
    for (const auto& [tp, pp, replicas] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {1, 1, 1}, {2, 2, 2}, {4, 1, 3}, {2, 3, 2}, {8, 2, 1}, {16, 2, 2}, {32, 1, 1}})
      for (const int64_t batch : {1, 2, 5})
        for (const int64_t prompt : {7, 40}) {
          PlanRequest r = request(tp * pp * replicas + 3, tp, pp);
          r.replicas = replicas, r.batch = batch, r.context = 64, r.block_tokens = 16;
          const Plan plan = make_plan(cfg, hw, r);
          const Program whole = build_program(plan, topology_for(plan), batch_prefill_blocks(plan, prompt));
          EXPECT_EQ(batch_prefill_cycles(plan, prompt), compute_timeline(whole, plan, 0).makespan_cycles)
              << tp << "x" << pp << "x" << replicas << " batch " << batch << " prompt " << prompt;
          ++cases;
        }
  EXPECT_EQ(cases, 2 * 7 * 3 * 2);
}

TEST(Timing, ChainedBatchPrefillEqualsTheWholeProgramAcrossDragonflyRacks) {
  // Beyond 264 chips a dragonfly's racks are joined by one global link per pair: hand-offs between racks
  // are split (each chip sends its share, the receiving stage all-gathers it, and the gather's first
  // sends wait for the stage's compute of the block before). A route between racks crosses gateway
  // chips that may be another replica's: replicas may then share links and are modelled together; the
  // others one at a time. Either way the makespan is the whole program's.
  chip::ModelConfig cfg = chip::model_preset("tiny");
  cfg.hidden_size = 256, cfg.n_heads = 32, cfg.n_kv_heads = 8, cfg.n_layers = 2;
  chip::ChipSpec chain;
  chain.topology = "chain";
  int64_t shared = 0, separate = 0;
  for (const chip::ChipSpec& hw : {chip::ChipSpec{}, chain})
    for (const auto& [tp, pp, replicas, chips] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{
             {32, 2, 3, 300}, {16, 6, 3, 300}, {5, 5, 5, 600}, {8, 3, 4, 300}, {4, 2, 3, 24}})
      for (const int64_t batch : {3, 7}) {
        PlanRequest r = request(chips, tp, pp);
        r.replicas = replicas, r.batch = batch, r.context = 64, r.block_tokens = 16;
        const Plan plan = make_plan(cfg, hw, r);
        const Topology topology = topology_for(plan);
        (replicas_share_links(plan, topology) ? shared : separate) += 1;
        const Program whole = build_program(plan, topology, batch_prefill_blocks(plan, 40));
        EXPECT_EQ(batch_prefill_cycles(plan, 40), compute_timeline(whole, plan, 0).makespan_cycles)
            << hw.topology << " " << tp << "x" << pp << "x" << replicas << " batch " << batch;
      }
  // Both ways are taken: on the dragonfly, 16x6x3 at both batches and 5x5x5 with all five replicas
  // prefilling share links.
  EXPECT_EQ(shared, 3);
  EXPECT_EQ(separate, 2 * 5 * 2 - 3);
}

TEST(Planner, TheChoiceCarriesTheBatchPrefillOnlyWhenTheSearchModelledIt) {
  // modelled_times of a choice takes its prefill from the search: the same figures as modelling the plan,
  // with chips or links slowed (each replica modelled) or not, one replica or several. Without a prompt,
  // with a fixed layout or for another prompt, the prefill is modelled.
  const auto cfg = chip::model_preset("tiny");
  chip::ChipSpec slowed;
  slowed.chip_speed_factors[3] = 0.5;
  int64_t carried = 0;
  for (const chip::ChipSpec& hw : {chip::ChipSpec{}, slowed})
    for (const int64_t batch : {1, 3})
      for (const int64_t prompt : {0, 20}) {
        PlanRequest r = request(12);
        r.batch = batch, r.context = 64, r.block_tokens = 8, r.prompt_tokens = prompt, r.output_tokens = 5;
        const PlanChoice choice = choose_plan(cfg, hw, r);
        EXPECT_EQ(choice.batch_prefill_cycles >= 0, prompt > 0);
        carried += choice.batch_prefill_cycles >= 0;
        for (const int64_t modelled_prompt : {prompt, int64_t{9}}) {
          const ModelledTimes a = modelled_times(choice, modelled_prompt, 5),
                              b = modelled_times(choice.plan, modelled_prompt, 5);
          EXPECT_EQ(a.prefill_cycles, b.prefill_cycles)
              << "batch " << batch << " prompt " << prompt << " modelled " << modelled_prompt;
          EXPECT_EQ(a.decode_cycles, b.decode_cycles);
        }
      }
  EXPECT_EQ(carried, 4);
  PlanRequest fixed = request(12, 2, 2);
  fixed.replicas = 1, fixed.context = 64, fixed.prompt_tokens = 20, fixed.output_tokens = 5;
  EXPECT_EQ(choose_plan(cfg, chip::ChipSpec{}, fixed).batch_prefill_cycles, -1);
  EXPECT_EQ(choose_plan(cfg, chip::ChipSpec{}, fixed).decode_program, nullptr);
}

TEST(Planner, TheChoiceCarriesItsDecodeProgramOnlyWhenItIsThePlans) {
  // The search's decode program is one replica's: it goes on with a one-replica plan, as the program
  // build_program makes for it (same ops, same timeline), and never with several replicas.
  const auto cfg = chip::model_preset("tiny");
  int64_t carried = 0;
  for (const int64_t batch : {1, 4})
    for (const int64_t prompt : {0, 20}) {
      PlanRequest r = request(16);
      r.batch = batch, r.context = 64, r.block_tokens = 8, r.prompt_tokens = prompt, r.output_tokens = 5;
      const PlanChoice choice = choose_plan(cfg, chip::ChipSpec{}, r);
      if (choice.decode_program == nullptr) continue;
      ++carried;
      EXPECT_EQ(choice.plan.replicas, 1);
      const Program built = build_program(choice.plan, topology_for(choice.plan), decode_blocks());
      ASSERT_EQ(choice.decode_program->ops.size(), built.ops.size());
      EXPECT_EQ(choice.decode_program->n_chips, built.n_chips);
      const Timeline a = compute_timeline(*choice.decode_program, choice.plan, 30),
                     b = compute_timeline(built, choice.plan, 30);
      EXPECT_EQ(a.start_cycles, b.start_cycles);
      EXPECT_EQ(a.duration_cycles, b.duration_cycles);
    }
  EXPECT_GE(carried, 2);  // batch 1 plans one replica
}

namespace {
/// What the search must pick: every layout of at most r.n_chips chips with a tp the search may take,
/// each replica count up to the batch and each stage count, modelled on its own, as (the request's
/// latency, chips, tp, replicas, pp); the smallest wins, ties to fewer chips, smaller tp, fewer replicas.
using LayoutKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>;
LayoutKey exhaustive_best(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r) {
  LayoutKey best{std::numeric_limits<int64_t>::max(), 0, 0, 0, 0};
  for (const int64_t tp : {1, 2, 3, 4, 5, 6, 7, 8, 16, 24, 32})
    for (int64_t replicas = 1; replicas <= r.batch && tp * replicas <= r.n_chips; ++replicas)
      for (int64_t pp = 1; pp <= chip::n_parts(cfg) && tp * pp * replicas <= r.n_chips; ++pp) {
        PlanRequest fixed = r;
        fixed.tp = tp, fixed.pp = pp, fixed.replicas = replicas;
        Plan p;
        try {
          p = make_plan(cfg, hw, fixed);
        } catch (const Error&) {
          continue;  // does not fit
        }
        const int64_t latency = batch_prefill_cycles(p, r.prompt_tokens) +
                                (r.output_tokens - 1) * decode_period_cycles(p, p.shape.context - 1);
        best = std::min(best, LayoutKey{latency, tp * pp * replicas, tp, replicas, pp});
      }
  return best;
}
}  // namespace

// With max_tp beyond a node, the search tries whole nodes per stage (16, 24, 32 chips) too, and still
// agrees with every such layout modelled by hand: the bounds that let it skip most (collectives across
// nodes take two hops) hold.
TEST(Planner, ChoosesAcrossNodesLikeTheExhaustiveSearch) {
  chip::ModelConfig cfg = chip::model_preset("tiny");
  cfg.hidden_size = 256, cfg.n_heads = 32, cfg.n_kv_heads = 8, cfg.intermediate_size = 1024, cfg.n_layers = 2;
  const int64_t prompt = 40, tokens = 3;
  int64_t wide = 0;
  for (const double hop_latency_ns : {300.0, 3.0}) {
    chip::ChipSpec hw;
    // With nearly free hops and a slow weight path, stages across nodes win.
    hw.hop_latency_ns = hop_latency_ns;
    hw.weight_bytes_per_cycle = 64;
    for (const int64_t chips : {16, 40, 64, 72})
      for (const int64_t batch : {1, 3}) {
        PlanRequest r = request(chips);
        r.batch = batch, r.context = 64, r.block_tokens = 16, r.max_tp = 32;
        r.prompt_tokens = prompt, r.output_tokens = tokens;
        const LayoutKey best = exhaustive_best(cfg, hw, r);
        const PlanChoice choice = choose_plan(cfg, hw, r);
        const Plan& chosen = choice.plan;
        EXPECT_EQ(std::make_tuple(chosen.tp, chosen.pp, chosen.replicas),
                  std::make_tuple(std::get<2>(best), std::get<4>(best), std::get<3>(best)))
            << chips << " chips, batch " << batch << ", " << hop_latency_ns << " ns per hop";
        // The search hands on the batch prefill it modelled: the one of the chosen plan.
        EXPECT_EQ(choice.batch_prefill_cycles, batch_prefill_cycles(chosen, prompt))
            << chips << " chips, batch " << batch;
        wide += chosen.tp > Topology::chips_per_node;
      }
  }
  EXPECT_GT(wide, 0);  // some cases choose tp across nodes
}

// The same across dragonfly racks (tp groups placed off rack boundaries or across them, hand-offs over
// the one global link between two racks) and on a chain, with heads and FFN columns that tp splits
// unevenly, dense and MoE: the chain bounds that order and prune the search hold, so it picks what
// modelling every layout picks, with the same modelled request latency.
TEST(Planner, ChoosesAcrossRacksLikeTheExhaustiveSearch) {
  const int64_t prompt = 40, tokens = 3, context = 64;
  int64_t wide = 0, cases = 0;
  for (const char* preset : {"tiny", "tiny-mixtral"}) {
    chip::ModelConfig cfg = chip::model_preset(preset);
    cfg.hidden_size = 320, cfg.n_heads = 40, cfg.n_kv_heads = 8, cfg.n_layers = 2;
    if (!cfg.is_moe()) cfg.intermediate_size = 1000;
    for (const auto& [topology, chips, hop_latency_ns] : std::vector<std::tuple<const char*, int64_t, double>>{
             {"dragonfly", 300, 300.0}, {"dragonfly", 600, 3.0}, {"chain", 150, 3.0}})
      for (const int64_t batch : {1, 3}) {
        chip::ChipSpec hw;
        hw.topology = topology;
        hw.hop_latency_ns = hop_latency_ns;
        hw.weight_bytes_per_cycle = 64;  // a slow weight path: stages across nodes win
        PlanRequest r = request(chips);
        r.batch = batch, r.context = context, r.block_tokens = 16, r.max_tp = 32;
        r.prompt_tokens = prompt, r.output_tokens = tokens;
        const LayoutKey best = exhaustive_best(cfg, hw, r);
        const PlanChoice choice = choose_plan(cfg, hw, r);
        const Plan& chosen = choice.plan;
        const std::string name = std::string(preset) + " on " + std::to_string(chips) + " " + topology + " chips, batch " +
                                 std::to_string(batch);
        ASSERT_EQ(std::make_tuple(chosen.tp, chosen.pp, chosen.replicas),
                  std::make_tuple(std::get<2>(best), std::get<4>(best), std::get<3>(best)))
            << name;
        EXPECT_EQ(batch_prefill_cycles(chosen, prompt) + (tokens - 1) * decode_period_cycles(chosen, context - 1), std::get<0>(best))
            << name;
        EXPECT_EQ(choice.batch_prefill_cycles, batch_prefill_cycles(chosen, prompt)) << name;
        wide += chosen.tp > Topology::chips_per_node;
        ++cases;
      }
  }
  EXPECT_EQ(cases, 2 * 3 * 2);
  EXPECT_GT(wide, 0);  // some cases choose tp across nodes
}
