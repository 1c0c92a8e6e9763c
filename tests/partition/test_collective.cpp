// The collective algorithms: each step's ranges tile the array (every element summed exactly once per
// member), the algorithm choice follows the modelled time, and the expanded programs compute an
// all-reduce and pass the verifier.

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "chip/error.hpp"
#include "partition/collective.hpp"
#include "partition/schedule.hpp"
#include "partition/timing.hpp"

using namespace lpurt;
using namespace lpurt::partition;

namespace {

std::vector<int64_t> consecutive(int64_t first, int64_t n) {
  std::vector<int64_t> chips(static_cast<std::size_t>(n));
  for (int64_t t = 0; t < n; ++t) chips[static_cast<std::size_t>(t)] = first + t;
  return chips;
}

}  // namespace

TEST(Collective, EveryStepsRangesTileTheRangeOfTheStepBefore) {
  for (const Collective& c : {Collective::direct(1000, 16), Collective::two_level(1000, 16, 8), Collective::two_level(7, 24, 8),
                              Collective::two_level(16384, 64, 8), Collective::direct(5, 8)}) {
    for (int step = 0; step < c.steps; ++step)
      for (int64_t t = 0; t < c.members; ++t) {
        // The members of t's step group split what they all held after the step before, in group order.
        const int64_t b = step == 0 ? 0 : c.begin(step - 1, t), e = step == 0 ? c.elements : c.end(step - 1, t);
        int64_t at = b;
        for (int64_t q = 0; q < c.group_size(step); ++q) {
          const int64_t u = c.peer(step, t, q);
          EXPECT_EQ(c.position(step, u), q);
          if (step > 0) {
            EXPECT_EQ(c.begin(step - 1, u), b) << "group members share the range of the step before";
          }
          EXPECT_EQ(c.begin(step, u), at);
          EXPECT_LE(c.end(step, u) - c.begin(step, u), c.max_share(step));
          at = c.end(step, u);
        }
        EXPECT_EQ(at, e);
        EXPECT_LE(c.receive_elements(step), receive_bound_elements(c.elements, c.members));
      }
    // After the last step every element has exactly one owner.
    std::vector<int> owners(static_cast<std::size_t>(c.elements), 0);
    for (int64_t t = 0; t < c.members; ++t)
      for (int64_t k = c.begin(c.steps - 1, t); k < c.end(c.steps - 1, t); ++k) ++owners[static_cast<std::size_t>(k)];
    for (int64_t k = 0; k < c.elements; ++k) EXPECT_EQ(owners[static_cast<std::size_t>(k)], 1) << "element " << k;
  }
}

TEST(Collective, DirectIsTheSingleStepSplitOfThePlansReduction) {
  const Collective c = Collective::direct(1001, 8);
  const Reduction r{1001, 8};
  for (int64_t t = 0; t < 8; ++t) {
    EXPECT_EQ(c.begin(0, t), r.begin(t));
    EXPECT_EQ(c.end(0, t), r.end(t));
  }
  EXPECT_EQ(c.max_share(0), r.max_share());
}

TEST(Collective, TwoLevelNeedsWholeNodesInOrder) {
  const Topology topo(TopologyKind::dragonfly, 64);
  EXPECT_EQ(candidate_collectives(consecutive(0, 8), 100, topo).size(), 1u) << "one node: direct only";
  EXPECT_EQ(candidate_collectives(consecutive(4, 16), 100, topo).size(), 1u) << "not aligned to nodes";
  EXPECT_EQ(candidate_collectives(consecutive(0, 12), 100, topo).size(), 1u) << "not whole nodes";
  const auto two = candidate_collectives(consecutive(16, 16), 100, topo);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[1].algorithm, Algorithm::two_level);
  EXPECT_EQ(two[1].group_size(0), 8);
  EXPECT_EQ(two[1].group_size(1), 2);
}

TEST(Collective, TheChoiceIsTheFastestCandidateInTheModel) {
  chip::ChipSpec hw;
  for (const auto kind : {TopologyKind::dragonfly, TopologyKind::chain}) {
    const Topology topo(kind, 64);
    for (const int64_t members : {8, 16, 64})
      for (const int64_t elements : {64, 16384, 1 << 20}) {
        const auto chips = consecutive(0, members);
        for (const Combine combine : {Combine::sum, Combine::max}) {
          const Collective chosen = choose_collective(chips, elements, combine, topo, hw);
          const int64_t chosen_cycles = collective_cycles(chips, chosen, combine, topo, hw);
          for (const Collective& c : candidate_collectives(chips, elements, topo))
            EXPECT_LE(chosen_cycles, collective_cycles(chips, c, combine, topo, hw));
          // Across nodes the direct exchange routes most transfers over the few inter-node links: the
          // two-level schedule, each chip on its own links, wins at every size.
          EXPECT_EQ(chosen.algorithm, members > 8 ? Algorithm::two_level : Algorithm::direct);
        }
      }
  }
}

TEST(Collective, TheStandaloneProgramSumsEveryMembersPartialOnce) {
  // Replays the program's data movement: member t's partial is {count 1, bit t} at every element; a
  // send carries its range (from the partials in reduce-scatter step 0, else from the running sums),
  // a reduce_sum adds what the step delivered. Every chip must end with count = members and every bit.
  const Topology topo(TopologyKind::dragonfly, 64);
  for (const Collective& c : {Collective::direct(100, 16), Collective::two_level(100, 16, 8), Collective::two_level(333, 64, 8)}) {
    const auto chips = consecutive(0, c.members);
    const Program p = build_collective_program(chips, c, Combine::sum, topo);
    struct Value {
      int64_t count = 0;
      uint64_t bits = 0;
    };
    const auto n = static_cast<std::size_t>(c.elements);
    std::vector<std::vector<Value>> sums(chips.size(), std::vector<Value>(n)), inbox(chips.size(), std::vector<Value>(n));
    for (const Op& op : p.ops) {
      const auto t = static_cast<std::size_t>(op.chip);
      if (op.kind == OpKind::send) {
        const auto u = static_cast<std::size_t>(op.peer);
        for (int64_t k = op.elem_begin; k < op.elem_begin + op.elem_count; ++k) {
          const auto ki = static_cast<std::size_t>(k);
          const Value v = op.payload == Payload::partial_sums && op.step == 0 ? Value{1, uint64_t{1} << t} : sums[t][ki];
          if (op.payload == Payload::partial_sums) {
            inbox[u][ki].count += v.count;
            inbox[u][ki].bits |= v.bits;
          } else {
            sums[u][ki] = v;
          }
        }
      } else if (op.kind == OpKind::reduce_sum) {
        for (int64_t k = c.begin(op.step, static_cast<int64_t>(t)); k < c.end(op.step, static_cast<int64_t>(t)); ++k) {
          const auto ki = static_cast<std::size_t>(k);
          if (op.step == 0) sums[t][ki] = {1, uint64_t{1} << t};
          sums[t][ki].count += inbox[t][ki].count;
          sums[t][ki].bits |= inbox[t][ki].bits;
          inbox[t][ki] = {};
        }
      }
    }
    const uint64_t all = c.members == 64 ? ~uint64_t{0} : (uint64_t{1} << c.members) - 1;
    for (std::size_t t = 0; t < chips.size(); ++t)
      for (std::size_t k = 0; k < n; ++k) {
        ASSERT_EQ(sums[t][k].count, c.members) << algorithm_name(c.algorithm) << " chip " << t << " element " << k;
        ASSERT_EQ(sums[t][k].bits, all);
      }
    Plan bare;
    EXPECT_NO_THROW(verify(p, TimelineSolver(p, bare).at(0)));
  }
}

TEST(Collective, StagesAcrossNodesUseTheChosenAlgorithmAndVerify) {
  PlanRequest r;
  r.n_chips = 32, r.tp = 16, r.pp = 2, r.context = 64, r.block_tokens = 8;
  chip::ModelConfig cfg = chip::model_preset("tiny");
  cfg.n_heads = 16, cfg.n_kv_heads = 4, cfg.hidden_size = 128;
  const Plan plan = make_plan(cfg, chip::ChipSpec{}, r);
  for (const std::vector<Block>& blocks : {decode_blocks(), prefill_blocks(20, 8)}) {
    const Program p = build_program(plan, topology_for(plan), blocks);
    ASSERT_FALSE(p.collectives.empty());
    for (const Collective& c : p.collectives) EXPECT_EQ(c.algorithm, Algorithm::two_level);
    EXPECT_NO_THROW(verify(p, compute_timeline(p, plan, 0)));
  }
}

TEST(Collective, ShipAllReduceRowMatchesValidation) {
  // docs/VALIDATION.md §6: lpurt's own 64-chip all-reduce, 8 dragonfly nodes, the facts sheet's constants.
  // SHIP reports 50% at 32 KiB and 90% at 80 KiB; lpurt gives 34.7% and 57.1% (below the +-20% bands, for
  // the reason the section gives). A change that moves them must regenerate that section.
  const chip::ChipSpec hw;
  const Topology topo(TopologyKind::dragonfly, 64);
  const AllReducePoint small = model_all_reduce(64, 32 * 1024, topo, hw);
  const AllReducePoint large = model_all_reduce(64, 80 * 1024, topo, hw);
  EXPECT_EQ(small.algorithm, Algorithm::two_level);
  EXPECT_NEAR(small.efficiency, 0.347, 0.005);
  EXPECT_NEAR(large.efficiency, 0.571, 0.005);
  const AllReducePoint reference = model_all_reduce(64, all_reduce_reference_bytes, topo, hw);
  EXPECT_NEAR(reference.efficiency, 1.0, 1e-12);
  EXPECT_THROW(model_all_reduce(65, 1024, topo, hw), chip::ConfigError);
}
