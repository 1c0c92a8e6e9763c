#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "partition/schedule.hpp"
#include "partition/timing.hpp"
#include "partition/topology.hpp"

using namespace lpurt;
using namespace lpurt::partition;

namespace {

Plan plan_for(const char* preset, int64_t tp, int64_t pp, const std::string& topology = "dragonfly") {
  PlanRequest r;
  r.n_chips = tp * pp;
  r.tp = tp;
  r.pp = pp;
  r.context = 64;
  r.block_tokens = 8;
  chip::ChipSpec hw;
  hw.topology = topology;
  return make_plan(chip::model_preset(preset), hw, r);
}

std::string error_of(const Program& p, const Timeline& t) {
  try {
    verify(p, t);
  } catch (const ScheduleError& e) {
    return e.what();
  }
  return "accepted";
}

/// A two-chip program: chip 0 computes, sends 64 bytes to chip 1, chip 1 computes on them.
Program two_chip_program(int64_t recv_bytes) {
  Program p;
  p.n_chips = 2;
  p.network_chips = 2;
  p.blocks = {{0, 1, false}};
  p.chip_ops.resize(2);
  auto add = [&](Op op, std::vector<int32_t> deps) {
    op.dep_begin = static_cast<int32_t>(p.deps.size());
    op.dep_count = static_cast<int32_t>(deps.size());
    p.deps.insert(p.deps.end(), deps.begin(), deps.end());
    p.ops.push_back(op);
    return static_cast<int32_t>(p.ops.size() - 1);
  };
  Op compute;
  compute.kind = OpKind::wo, compute.unit = Unit::mxm, compute.chip = 0;
  const int32_t c0 = add(compute, {});
  Op send;
  send.kind = OpKind::send, send.unit = Unit::c2c, send.payload = Payload::activations, send.chip = 0, send.peer = 1;
  send.bytes = 64, send.hop_begin = 0, send.hop_count = 1;
  p.hops.push_back({0, 1});
  const int32_t s = add(send, {c0});
  Op recv = send;
  recv.kind = OpKind::recv, recv.chip = 1, recv.peer = 0, recv.bytes = recv_bytes, recv.hop_count = 0;
  const int32_t r = add(recv, {s});
  p.ops[static_cast<std::size_t>(s)].match = r;
  p.ops[static_cast<std::size_t>(r)].match = s;
  Op use;
  use.kind = OpKind::attn_residual, use.unit = Unit::vxm, use.chip = 1;
  add(use, {r});
  return p;
}

Timeline times(std::vector<std::pair<int64_t, int64_t>> start_duration) {
  Timeline t;
  for (auto [s, d] : start_duration) t.start_cycles.push_back(s), t.duration_cycles.push_back(d);
  return t;
}

}  // namespace

TEST(Topology, NodeLocalPairsAreOneHopAndNeighbourNodesThree) {
  const Topology chain(TopologyKind::chain, 72);
  EXPECT_EQ(chain.hop_count(0, 7), 1);
  EXPECT_EQ(chain.hop_count(3, 3), 0);
  EXPECT_LE(chain.hop_count(0, 8 + 5), 3);  // next node
  const Topology df(TopologyKind::dragonfly, 264);
  EXPECT_LE(df.diameter(), 2);  // 33 nodes all-to-all over links of equal chip index
}

TEST(Topology, IscaDragonflyAt10440ChipsHasAtMostFiveHops) {
  const Topology df(TopologyKind::dragonfly, Topology::max_dragonfly_chips);
  EXPECT_EQ(df.diameter(), 5);
  EXPECT_THROW(Topology(TopologyKind::dragonfly, 10'441), chip::ConfigError);
}

TEST(Topology, RoutesAreDeterministicAndConnected) {
  for (auto kind : {TopologyKind::chain, TopologyKind::dragonfly}) {
    const Topology t(kind, 700);
    for (int64_t a : {0, 13, 350, 699})
      for (int64_t b : {1, 64, 400, 698}) {
        std::vector<Hop> r1, r2;
        t.route(a, b, r1);
        t.route(a, b, r2);
        EXPECT_EQ(r1, r2);
        ASSERT_FALSE(r1.empty());
        EXPECT_EQ(r1.front().from, a);
        EXPECT_EQ(r1.back().to, b);
        for (std::size_t k = 1; k < r1.size(); ++k) EXPECT_EQ(r1[k - 1].to, r1[k].from);
      }
  }
}

TEST(Verifier, AcceptsEveryCompiledSchedule) {
  for (auto [preset, tp, pp] : std::vector<std::tuple<const char*, int64_t, int64_t>>{{"tiny", 1, 1},
                                                                                      {"tiny", 2, 1},
                                                                                      {"tiny", 4, 2},
                                                                                      {"tiny", 8, 4},
                                                                                      {"tiny", 3, 4},
                                                                                      {"tiny-mixtral", 1, 2},
                                                                                      {"tiny-mixtral", 2, 3},
                                                                                      {"tiny-mixtral", 1, 6}})
    for (const char* topo : {"dragonfly", "chain"}) {
      const Plan plan = plan_for(preset, tp, pp, topo);
      const Topology topology = topology_for(plan);
      for (const auto& blocks : {prefill_blocks(20, 8), decode_blocks()}) {
        const Program p = build_program(plan, topology, blocks);
        EXPECT_NO_THROW(verify(p, compute_timeline(p, plan, 5))) << preset << " tp=" << tp << " pp=" << pp << " " << topo;
      }
    }
}

TEST(Schedule, AStageBeginningInsideAnFfnReceivesTheSiluOutputAndAmax) {
  // tiny on tp 2 x pp 4: stage 1 begins at layer 0's FFN output half (part 2).
  const Plan plan = plan_for("tiny", 2, 4);
  ASSERT_EQ(chip::part_kind(plan.stage_part_begin[1]), chip::LayerPart::ffn_out);
  const int64_t n = 8, d = plan.model.hidden_size;
  const Program p = build_program(plan, topology_for(plan), prefill_blocks(n, 8));
  EXPECT_NO_THROW(verify(p, compute_timeline(p, plan, 0)));
  std::map<int64_t, int64_t> hand_offs;  // by receiving stage
  for (const Op& op : p.ops) {
    if (op.kind != OpKind::send || (op.payload != Payload::activations && op.payload != Payload::activations_ffn)) continue;
    const ChipPlan& from = plan.chips[static_cast<std::size_t>(op.chip)];
    const ChipPlan& to = plan.chips[static_cast<std::size_t>(op.peer)];
    EXPECT_EQ(to.stage, from.stage + 1);
    EXPECT_EQ(to.tp_rank, from.tp_rank);  // the same FFN columns
    EXPECT_EQ(from.range.ffn_begin, to.range.ffn_begin);
    ++hand_offs[to.stage];
    const bool inside = chip::part_kind(to.range.part_begin) == chip::LayerPart::ffn_out;
    EXPECT_EQ(op.payload, inside ? Payload::activations_ffn : Payload::activations) << "stage " << to.stage;
    // The activations, then (inside an FFN) the SiLU output of the chip's columns and the amax.
    EXPECT_EQ(op.elem_count, inside ? n * (d + from.range.n_ffn() + 1) : n * d);
    EXPECT_EQ(op.bytes, 4 * op.elem_count);
    EXPECT_EQ(link_bytes(op, plan.hardware), plan.hardware.activation_bytes_per_value * op.elem_count);
  }
  // One transfer per chip of every stage after the first.
  EXPECT_EQ(hand_offs, (std::map<int64_t, int64_t>{{1, 2}, {2, 2}, {3, 2}}));
}

TEST(Schedule, AStageBeginningInsideAnMoeFfnReceivesTheRoutingSlotAmaxAndSiluRows) {
  // tiny-mixtral (4 experts, 2 per token) on tp 2 x pp 3: each chip holds 2 whole experts; on tp 1 x pp 6
  // all 4; on tp 8 x pp 6 each expert is sliced over 2 chips. A stage that begins at an MoE FFN's w_down half receives,
  // after the activations, each token's chosen experts and weights, the stage's slot amax and the SiLU rows of the
  // slots its chip may hold.
  for (const auto& [tp, pp] : std::vector<std::pair<int64_t, int64_t>>{{2, 3}, {1, 6}, {8, 6}}) {
    PlanRequest r;
    r.n_chips = tp * pp, r.tp = tp, r.pp = pp, r.context = 64, r.block_tokens = 8;
    r.moe_ffn_cuts = MoeFfnCuts::allowed;
    chip::ModelConfig cfg = chip::model_preset("tiny-mixtral");
    if (tp > cfg.n_heads) cfg.n_heads = tp;  // a chip holds at least one query head
    const Plan plan = make_plan(cfg, chip::ChipSpec{}, r);
    const int64_t n = 8, d = cfg.hidden_size, k = cfg.n_experts_per_token;
    int64_t inside = 0;
    for (int64_t s = 1; s < pp; ++s)
      inside += chip::part_kind(plan.stage_part_begin[static_cast<std::size_t>(s)]) == chip::LayerPart::ffn_out;
    ASSERT_GT(inside, 0) << "tp " << tp << " x pp " << pp;
    for (const auto& blocks : {prefill_blocks(n, 8), decode_blocks()}) {
      const Program p = build_program(plan, topology_for(plan), blocks);
      EXPECT_NO_THROW(verify(p, compute_timeline(p, plan, 0)));
      const int64_t tokens = blocks.front().n_tokens;
      int64_t sends = 0, unpacks = 0;
      for (const Op& op : p.ops) {
        unpacks += op.kind == OpKind::moe_down && op.payload == Payload::activations_ffn;
        if (op.kind != OpKind::send || op.payload != Payload::activations_ffn) continue;
        ++sends;
        const ChipPlan& from = plan.chips[static_cast<std::size_t>(op.chip)];
        const ChipPlan& to = plan.chips[static_cast<std::size_t>(op.peer)];
        EXPECT_EQ(to.stage, from.stage + 1);
        EXPECT_EQ(from.range.expert_begin, to.range.expert_begin);  // the same experts and columns
        EXPECT_EQ(from.range.ffn_begin, to.range.ffn_begin);
        const int64_t rows = tokens * std::min(k, from.range.n_experts());
        EXPECT_EQ(op.elem_count, tokens * d + 3 * tokens * k + rows * from.range.n_ffn());
        EXPECT_EQ(op.elem_count - tokens * d, chip::ffn_hand_off_values(cfg, from.range, tokens));
        EXPECT_EQ(op.bytes, 4 * op.elem_count);
        // On the links: the activations, the weights and slot amax, the expert indices one byte each, and
        // the SiLU rows of the pairs the chip runs with the k x n pairs spread over the E experts.
        const int64_t abpv = plan.hardware.activation_bytes_per_value;
        const int64_t pairs = std::min(rows, (k * tokens * from.range.n_experts() + cfg.n_experts - 1) / cfg.n_experts);
        EXPECT_EQ(link_bytes(op, plan.hardware), abpv * (tokens * d + 2 * tokens * k + pairs * from.range.n_ffn()) +
                                                     abpv * ((tokens * k + abpv - 1) / abpv));
      }
      EXPECT_EQ(sends, inside * tp);
      EXPECT_EQ(unpacks, inside * tp);  // each receiving chip's w_down unpacks its hand-off
    }
  }
}

TEST(Schedule, ASplitHandOffIntoAnMoeFfnCarriesEachChipsRoutingAndSiluRowsWithItsShare) {
  // On slow links tiny-mixtral's tp 4 x pp 3 splits its hand-offs: stages 1 and 2 begin at the MoE w_down
  // halves of layers 0 and 1 (parts 2 and 5), and each chip's share of the activations carries that
  // chip's FFN input half's results.
  // tests/runtime/mpi_bit_identity.sh runs this layout with the same links.
  PlanRequest r;
  r.n_chips = 12, r.tp = 4, r.pp = 3, r.context = 64, r.block_tokens = 2;
  r.moe_ffn_cuts = MoeFfnCuts::allowed;
  chip::ChipSpec hw;
  hw.link_bytes_per_s = 1e8;
  const Plan plan = make_plan(chip::model_preset("tiny-mixtral"), hw, r);
  ASSERT_EQ(plan.stage_part_begin[1], chip::part_index(0, chip::LayerPart::ffn_out));
  ASSERT_EQ(plan.stage_part_begin[2], chip::part_index(1, chip::LayerPart::ffn_out));
  const int64_t d = plan.model.hidden_size;
  for (const auto& blocks : {prefill_blocks(4, 2), decode_blocks()}) {
    const Program p = build_program(plan, topology_for(plan), blocks);
    EXPECT_NO_THROW(verify(p, compute_timeline(p, plan, 3)));
    int64_t shares = 0;
    for (const Op& op : p.ops) {
      if (op.kind != OpKind::send) continue;
      EXPECT_NE(op.payload, Payload::activations_ffn);  // every hand-off into the FFN is split
      if (op.payload != Payload::activations_ffn_share) continue;
      ++shares;
      const int64_t n = p.blocks[static_cast<std::size_t>(op.block)].n_tokens;
      const ChipPlan& from = plan.chips[static_cast<std::size_t>(op.chip)];
      EXPECT_EQ(op.elem_count, n * d / plan.tp + chip::ffn_hand_off_values(plan.model, from.range, n));
      EXPECT_EQ(link_bytes(op, plan.hardware),
                plan.hardware.activation_bytes_per_value *
                    (n * d / plan.tp + ffn_hand_off_link_values(plan.model, from.range, n, plan.hardware)));
      EXPECT_LT(link_bytes(op, plan.hardware), plan.hardware.activation_bytes_per_value * op.elem_count);
    }
    EXPECT_EQ(shares, 2 * plan.tp * static_cast<int64_t>(blocks.size()));
  }
}

TEST(Verifier, RejectsADoubleBookedLink) {
  const Plan plan = plan_for("tiny", 2, 1);
  Program p = build_program(plan, topology_for(plan), decode_blocks());
  Timeline t = compute_timeline(p, plan, 3);
  // A second transfer on the first send's link, at the same cycles, with its own receive.
  std::size_t first = 0;
  while (p.ops[first].kind != OpKind::send) ++first;
  const auto copy = static_cast<int32_t>(p.ops.size());
  Op send = p.ops[first], recv = p.ops[static_cast<std::size_t>(send.match)];
  send.match = copy + 1, recv.match = copy;
  recv.dep_begin = static_cast<int32_t>(p.deps.size()), recv.dep_count = 1;
  p.deps.push_back(copy);
  p.ops.push_back(send), p.ops.push_back(recv);
  t.start_cycles.push_back(t.start_cycles[first]), t.duration_cycles.push_back(t.duration_cycles[first]);
  t.start_cycles.push_back(t.end_cycles(first)), t.duration_cycles.push_back(0);
  const std::string m = error_of(p, t);
  EXPECT_NE(m.find("link 0->1 is double-booked"), std::string::npos) << m;
}

TEST(Verifier, RejectsADoubleBookedUnit) {
  const Program p = two_chip_program(64);
  // wo on chip 0 and a second MXM op at the same cycles.
  Program q = p;
  Op extra = q.ops[0];
  extra.kind = OpKind::qkv;
  q.ops.push_back(extra);
  const Timeline t = times({{0, 100}, {100, 10}, {110, 0}, {110, 5}, {50, 20}});
  const std::string m = error_of(q, t);
  EXPECT_NE(m.find("chip 0 MXM is double-booked"), std::string::npos) << m;
}

TEST(Verifier, RejectsASizeMismatch) {
  const std::string m = error_of(two_chip_program(32), times({{0, 100}, {100, 10}, {110, 0}, {110, 5}}));
  EXPECT_NE(m.find("size mismatch"), std::string::npos) << m;
  EXPECT_NE(m.find("sends 64 bytes"), std::string::npos) << m;
}

TEST(Verifier, RejectsDataUsedBeforeItArrives) {
  const std::string m = error_of(two_chip_program(64), times({{0, 100}, {100, 10}, {105, 0}, {105, 5}}));
  EXPECT_NE(m.find("data used before it arrives"), std::string::npos) << m;
  EXPECT_NE(m.find("chip 1 recv from chip 0"), std::string::npos) << m;
}

TEST(Verifier, RejectsASendWithoutReceive) {
  Program p = two_chip_program(64);
  p.ops[1].match = -1;
  const std::string m = error_of(p, times({{0, 100}, {100, 10}, {110, 0}, {110, 5}}));
  EXPECT_NE(m.find("has no matching receive"), std::string::npos) << m;
}

TEST(Schedule, TransfersMakeMultiChipStepsSlowerThanTheirCompute) {
  const Plan plan = plan_for("tiny", 2, 2);
  const Program p = build_program(plan, topology_for(plan), decode_blocks());
  const Timeline t = compute_timeline(p, plan, 10);
  const StepProfile s = profile(p, t, plan.hardware);
  EXPECT_GT(s.n_transfers, 0);
  int64_t stage_compute = 0;
  for (int64_t c : s.chip_compute_cycles) stage_compute = std::max(stage_compute, c);
  EXPECT_GT(t.makespan_cycles, stage_compute);
}

TEST(Topology, ShipPartitionDiametersAreThreeAndFiveHops) {
  // SHIP (lpu-v1-facts §2.4): a 72-LPU partition has a diameter of 3 hops, a 136-LPU one of 5.
  EXPECT_EQ(Topology(TopologyKind::chain, 72).diameter(), 3);
  EXPECT_EQ(Topology(TopologyKind::chain, 136).diameter(), 5);
}

TEST(Topology, PartlyFilledLastNodesRouteOnlyThroughChipsThatExist) {
  // route() asserts that every hop joins two existing chips; walk every pair of odd-sized systems.
  for (auto kind : {TopologyKind::chain, TopologyKind::dragonfly})
    for (int64_t n : {9, 10, 13, 17, 75, 137, 281}) {
      const Topology t(kind, n);
      for (int64_t a = 0; a < n; ++a)
        for (int64_t b = 0; b < n; ++b) {
          std::vector<Hop> r;
          t.route(a, b, r);
          if (a == b) continue;
          ASSERT_FALSE(r.empty());
          EXPECT_EQ(r.front().from, a);
          EXPECT_EQ(r.back().to, b);
          for (const Hop& h : r) ASSERT_LT(std::max(h.from, h.to), n) << topology_name(kind) << " " << n;
        }
    }
}

namespace {

Plan heterogeneous_plan(int64_t pp, int64_t replicas, int64_t batch, const std::vector<std::string>& settings) {
  PlanRequest r;
  r.n_chips = pp * replicas;
  r.tp = 1;
  r.pp = pp;
  r.replicas = replicas;
  r.batch = batch;
  r.context = 64;
  r.block_tokens = 8;
  chip::ChipSpec hw;
  for (const auto& s : settings) chip::apply_assignment(hw, s, "test");
  return make_plan(chip::model_preset("tiny"), hw, r);
}

}  // namespace

TEST(Heterogeneity, ASlowChipStretchesItsOwnOpsOnly) {
  const Plan nominal = heterogeneous_plan(4, 1, 1, {});
  const Plan slow = heterogeneous_plan(4, 1, 1, {"chip_speed_factor.1=0.25"});
  const Topology topology = topology_for(nominal);
  const Program program = build_program(nominal, topology, decode_blocks());
  const Timeline a = compute_timeline(program, nominal, 10), b = compute_timeline(program, slow, 10);
  for (std::size_t i = 0; i < program.ops.size(); ++i) {
    const Op& op = program.ops[i];
    if (op.kind == OpKind::send || op.kind == OpKind::recv) {
      EXPECT_EQ(a.duration_cycles[i], b.duration_cycles[i]) << describe_op(program, a, i);
    } else if (op.chip == 1) {
      EXPECT_EQ(b.duration_cycles[i], 4 * a.duration_cycles[i]) << describe_op(program, a, i);
    } else {
      EXPECT_EQ(a.duration_cycles[i], b.duration_cycles[i]) << describe_op(program, a, i);
    }
  }
  EXPECT_NO_THROW(verify(program, b));
  EXPECT_GT(modelled_times(slow, 8, 4).tpot_s, modelled_times(nominal, 8, 4).tpot_s);
}

TEST(Heterogeneity, ASlowLinkStretchesTheTransfersThatCrossIt) {
  const Plan nominal = heterogeneous_plan(4, 1, 1, {});
  const Plan slow = heterogeneous_plan(4, 1, 1, {"link_bandwidth_factor.2-1=0.5"});
  const Program program = build_program(nominal, topology_for(nominal), decode_blocks());
  const Timeline a = compute_timeline(program, nominal, 10), b = compute_timeline(program, slow, 10);
  int64_t stretched = 0;
  for (std::size_t i = 0; i < program.ops.size(); ++i) {
    const Op& op = program.ops[i];
    if (op.kind != OpKind::send) continue;
    bool crosses = false;
    for (int32_t h = 0; h < op.hop_count; ++h) {
      const Hop& hop = program.hops[static_cast<std::size_t>(op.hop_begin + h)];
      crosses = crosses || (std::min(hop.from, hop.to) == 1 && std::max(hop.from, hop.to) == 2);
    }
    // hops x 300 ns + values x FP16 bytes / (14 GB/s x 0.5), in 900 MHz cycles, rounded up.
    const double seconds = static_cast<double>(op.hop_count) * 300e-9 +
                           static_cast<double>(op.elem_count * nominal.hardware.activation_bytes_per_value) /
                               (14e9 * (crosses ? 0.5 : 1.0));
    EXPECT_EQ(b.duration_cycles[i], static_cast<int64_t>(std::ceil(seconds * 900e6))) << describe_op(program, b, i);
    stretched += crosses;
  }
  EXPECT_GT(stretched, 0);
  EXPECT_GT(modelled_times(slow, 8, 4).tpot_transfer_s, modelled_times(nominal, 8, 4).tpot_transfer_s);
}

TEST(Heterogeneity, AStragglerStageMakesABatchedPipelineWait) {
  // Four sequences in one 4-stage pipeline: a user's token waits for the busiest stage to serve all four.
  const ModelledTimes nominal = modelled_times(heterogeneous_plan(4, 1, 4, {}), 8, 4);
  const ModelledTimes slow = modelled_times(heterogeneous_plan(4, 1, 4, {"chip_speed_factor.2=0.1"}), 8, 4);
  EXPECT_GT(slow.tpot_idle_s, nominal.tpot_idle_s);
  EXPECT_GT(slow.tpot_s, nominal.tpot_s);
  EXPECT_DOUBLE_EQ(slow.tpot_s, slow.tpot_compute_s + slow.tpot_transfer_s + slow.tpot_idle_s);
}

TEST(Heterogeneity, TheSlowestReplicaSetsTheDecodeFigures) {
  const ModelledTimes nominal = modelled_times(heterogeneous_plan(2, 2, 2, {}), 8, 4);
  const ModelledTimes slow_replica1 = modelled_times(heterogeneous_plan(2, 2, 2, {"chip_speed_factor.3=0.5"}), 8, 4);
  EXPECT_GT(slow_replica1.tpot_s, nominal.tpot_s);
}

TEST(Heterogeneity, EveryReplicasChipsReportTheirOwnDecodeCycles) {
  // Identical replicas run the same program on their own chips: the same busy cycles, chip for chip.
  const ModelledTimes nominal = modelled_times(heterogeneous_plan(2, 3, 3, {}), 8, 4);
  ASSERT_EQ(nominal.decode.chip_compute_cycles.size(), 6u);
  for (std::size_t c = 2; c < 6; ++c) {
    EXPECT_GT(nominal.decode.chip_compute_cycles[c], 0) << "chip " << c;
    EXPECT_EQ(nominal.decode.chip_compute_cycles[c], nominal.decode.chip_compute_cycles[c % 2]) << "chip " << c;
    EXPECT_EQ(nominal.decode.chip_send_cycles[c], nominal.decode.chip_send_cycles[c % 2]) << "chip " << c;
  }
  // A chip at half speed in replica 2 is busy twice as long (each op rounds up to a whole cycle); the
  // other chips keep their cycles.
  const ModelledTimes slow = modelled_times(heterogeneous_plan(2, 3, 3, {"chip_speed_factor.5=0.5"}), 8, 4);
  for (std::size_t c = 0; c < 5; ++c)
    EXPECT_EQ(slow.decode.chip_compute_cycles[c], nominal.decode.chip_compute_cycles[c]) << "chip " << c;
  EXPECT_GE(slow.decode.chip_compute_cycles[5], 2 * nominal.decode.chip_compute_cycles[5] - 64);
  EXPECT_LE(slow.decode.chip_compute_cycles[5], 2 * nominal.decode.chip_compute_cycles[5] + 64);
}

TEST(Heterogeneity, FactorsMustNameChipsAndLinksThatExist) {
  auto message = [](const std::vector<std::string>& settings) {
    try {
      heterogeneous_plan(4, 1, 1, settings);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({"chip_speed_factor.4=0.5"}).find("chip_speed_factor.4: there are only 4 chips"), std::string::npos);
  EXPECT_NE(message({"link_bandwidth_factor.0-7=0.5"}).find("there are only 4 chips"), std::string::npos);
  chip::ChipSpec hw;
  EXPECT_THROW(chip::apply_assignment(hw, "chip_speed_factor.1=0", "test"), chip::ConfigError);
  EXPECT_THROW(chip::apply_assignment(hw, "chip_speed_factor.x=0.5", "test"), chip::ConfigError);
  EXPECT_THROW(chip::apply_assignment(hw, "link_bandwidth_factor.3-3=0.5", "test"), chip::ConfigError);
  // In a dragonfly of 4 nodes, chip 1 and chip 10 (node 1, index 2) are not neighbours.
  PlanRequest r;
  r.n_chips = 32;
  r.tp = 1;
  r.pp = 8;
  chip::apply_assignment(hw, "link_bandwidth_factor.1-10=0.5", "test");
  try {
    make_plan(chip::model_preset("tiny"), hw, r);
    FAIL() << "a link between chips that are not neighbours was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("are not linked directly in the dragonfly topology"), std::string::npos)
        << e.what();
  }
}

namespace {

/// The booking the schedule is defined by, step by step: every op in array order starts at the latest of
/// its data dependencies' ends and its unit's or links' next free cycle (durations from a fresh
/// compute_timeline at this position). An independent statement of what TimelineSolver computes.
Timeline booked_timeline(const Program& p, const Plan& plan, int64_t position) {
  Timeline t = compute_timeline(p, plan, position);
  std::map<int64_t, std::pair<int64_t, int32_t>> unit_free;                // free cycle, last op
  std::map<std::pair<int64_t, int64_t>, std::pair<int64_t, int32_t>> link_free;
  t.makespan_cycles = 0;
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    const Op& op = p.ops[i];
    int64_t ready = 0;
    int32_t waited_for = -1;
    auto wait_for = [&](int64_t cycles, int32_t by) {
      if (cycles > ready) ready = cycles, waited_for = by;
    };
    for (int32_t k = 0; k < op.dep_count; ++k) {
      const auto dep = static_cast<std::size_t>(p.deps[static_cast<std::size_t>(op.dep_begin + k)]);
      wait_for(t.start_cycles[dep] + t.duration_cycles[dep], static_cast<int32_t>(dep));
    }
    if (op.kind == OpKind::send) {
      for (int32_t h = 0; h < op.hop_count; ++h) {
        const Hop& hop = p.hops[static_cast<std::size_t>(op.hop_begin + h)];
        const auto it = link_free.find({hop.from, hop.to});
        if (it != link_free.end()) wait_for(it->second.first, it->second.second);
      }
      for (int32_t h = 0; h < op.hop_count; ++h) {
        const Hop& hop = p.hops[static_cast<std::size_t>(op.hop_begin + h)];
        link_free[{hop.from, hop.to}] = {ready + t.duration_cycles[i], static_cast<int32_t>(i)};
      }
    } else if (op.kind != OpKind::recv) {
      const int64_t unit = 2 * op.chip + (op.unit == Unit::mxm ? 0 : 1);
      const auto it = unit_free.find(unit);
      if (it != unit_free.end()) wait_for(it->second.first, it->second.second);
      unit_free[unit] = {ready + t.duration_cycles[i], static_cast<int32_t>(i)};
    }
    t.start_cycles[i] = ready;
    t.waited_for[i] = waited_for;
    if (op.kind != OpKind::recv) t.makespan_cycles = std::max(t.makespan_cycles, ready + t.duration_cycles[i]);
  }
  return t;
}

}  // namespace

TEST(Timing, DecodeFiguresEqualTheStepByStepBooking) {
  struct Case {
    Plan plan;
    int64_t prompt_tokens, output_tokens;
  };
  std::vector<Case> cases = {
      {plan_for("tiny", 2, 2), 5, 40},
      {plan_for("tiny-mixtral", 2, 2), 3, 30},
      {plan_for("small", 4, 3), 1, 60},
      {heterogeneous_plan(2, 3, 3, {"chip_speed_factor.5=0.5"}), 8, 20},
      {heterogeneous_plan(4, 1, 4, {"link_bandwidth_factor.2-1=0.5"}), 8, 50},
  };
  for (const Case& c : cases) {
    const Plan& plan = c.plan;
    SCOPED_TRACE(plan.model.hidden_size);
    const ModelledTimes m = modelled_times(plan, c.prompt_tokens, c.output_tokens);
    // The slowest replica's decode program, as modelled_times picks it, then every step booked afresh.
    const Topology topology = topology_for(plan);
    int64_t replica = 0, slowest = -1;
    for (int64_t r = 0; r < (plan.hardware.uniform() ? 1 : plan.replicas); ++r) {
      const Program one = build_program(plan, topology, decode_blocks(r));
      const int64_t cycles = decode_period_cycles(plan, one, booked_timeline(one, plan, c.prompt_tokens));
      if (cycles > slowest) slowest = cycles, replica = r;
    }
    const Program decode = build_program(plan, topology, decode_blocks(replica));
    int64_t decode_cycles = 0, compute_cycles = 0, transfer_cycles = 0;
    for (int64_t i = 0; i < c.output_tokens - 1; ++i) {
      const Timeline booked = booked_timeline(decode, plan, c.prompt_tokens + i);
      const Timeline solved = compute_timeline(decode, plan, c.prompt_tokens + i);
      ASSERT_EQ(solved.start_cycles, booked.start_cycles) << "step " << i;
      ASSERT_EQ(solved.waited_for, booked.waited_for) << "step " << i;
      ASSERT_EQ(solved.makespan_cycles, booked.makespan_cycles) << "step " << i;
      const StepProfile step = profile(decode, booked, plan.hardware);
      decode_cycles += decode_period_cycles(plan, decode, booked);
      compute_cycles += step.critical_compute_cycles;
      transfer_cycles += step.critical_transfer_cycles;
    }
    const auto steps = static_cast<double>(c.output_tokens - 1);
    const double clock_hz = plan.hardware.clock_hz;
    EXPECT_EQ(m.decode_cycles, decode_cycles);
    EXPECT_EQ(m.tpot_s, static_cast<double>(decode_cycles) / steps / clock_hz);
    EXPECT_EQ(m.tpot_compute_s, static_cast<double>(compute_cycles) / steps / clock_hz);
    EXPECT_EQ(m.tpot_transfer_s, static_cast<double>(transfer_cycles) / steps / clock_hz);
  }
}

TEST(Timing, TheSolverSkipsStepsWhoseDurationsRepeat) {
  const Plan plan = plan_for("small", 2, 2);
  const Program decode = build_program(plan, topology_for(plan), decode_blocks());
  TimelineSolver solver(decode, plan);
  solver.at(10);
  EXPECT_EQ(solver.solves(), 1);
  solver.at(10);
  EXPECT_EQ(solver.solves(), 1);
  const Timeline& later = solver.at(60);
  EXPECT_EQ(solver.solves(), 2);
  EXPECT_EQ(later.start_cycles, compute_timeline(decode, plan, 60).start_cycles);
}

TEST(Schedule, ASplitHandOffSendsEachChipsShareAndTheStageGathersIt) {
  // tiny on tp 4 x pp 4 with slow links: the split pays (each chip's links carry a quarter of the
  // activations and the gather runs over the receiving node's own links); stage 1 begins inside an FFN
  // (part 2). tests/runtime/mpi_bit_identity.sh runs this layout with the same links.
  PlanRequest r;
  r.n_chips = 16, r.tp = 4, r.pp = 4, r.context = 64, r.block_tokens = 2;
  chip::ChipSpec hw;
  hw.link_bytes_per_s = 1e8;
  const Plan plan = make_plan(chip::model_preset("tiny"), hw, r);
  ASSERT_EQ(chip::part_kind(plan.stage_part_begin[1]), chip::LayerPart::ffn_out);
  const int64_t d = plan.model.hidden_size;
  for (const auto& blocks : {prefill_blocks(4, 2), decode_blocks()}) {
    const Program p = build_program(plan, topology_for(plan), blocks);
    EXPECT_NO_THROW(verify(p, compute_timeline(p, plan, 3)));
    // The same along the dependencies, which the timeline and the ranks follow (not the program order): a
    // chip forwards only elements that a receive on its own dependency chain delivered.
    std::vector<std::vector<bool>> delivered(p.ops.size());  // [op][n x d]: on the op's chain, before it
    for (std::size_t i = 0; i < p.ops.size(); ++i) {
      const Op& op = p.ops[i];
      std::vector<bool>& mine = delivered[i];
      mine.assign(static_cast<std::size_t>(p.blocks[static_cast<std::size_t>(op.block)].n_tokens * d), false);
      for (int32_t k = op.dep_begin; k < op.dep_begin + op.dep_count; ++k) {
        const auto dep = static_cast<std::size_t>(p.deps[static_cast<std::size_t>(k)]);
        if (p.ops[dep].chip != op.chip || p.ops[dep].block != op.block) continue;
        for (std::size_t e = 0; e < mine.size(); ++e) mine[e] = mine[e] || delivered[dep][e];
        const Op& before = p.ops[dep];
        if (before.kind != OpKind::recv) continue;
        int64_t count = before.elem_count;
        if (before.payload == Payload::activations_ffn_share)  // the SiLU output and amax follow the range
          count -= p.blocks[static_cast<std::size_t>(op.block)].n_tokens * (plan.chips[static_cast<std::size_t>(op.chip)].range.n_ffn() + 1);
        else if (before.payload != Payload::activations_share && before.payload != Payload::activations_gathered)
          continue;
        for (int64_t e = before.elem_begin; e < before.elem_begin + count; ++e) mine[static_cast<std::size_t>(e)] = true;
      }
      if (op.kind != OpKind::send || op.payload != Payload::activations_gathered) continue;
      for (int64_t e = op.elem_begin; e < op.elem_begin + op.elem_count; ++e) {
        EXPECT_TRUE(mine[static_cast<std::size_t>(e)]) << "along its dependencies: " << describe_op(p, Timeline{}, i);
      }
    }
    // Which activations each chip holds in each block, following the transfers in program order: every
    // chip of a stage after the first holds them all at its first compute op, and forwards only what it
    // holds.
    std::map<std::pair<int32_t, int32_t>, std::vector<bool>> held;  // by (block, chip)
    std::map<std::pair<int32_t, int32_t>, bool> computed;
    int64_t shares = 0, ffn_shares = 0, whole = 0;
    for (const Op& op : p.ops) {
      const int64_t n = p.blocks[static_cast<std::size_t>(op.block)].n_tokens;
      const ChipPlan& chip = plan.chips[static_cast<std::size_t>(op.chip)];
      std::vector<bool>& mine = held[{op.block, op.chip}];
      mine.resize(static_cast<std::size_t>(n * d), false);
      if (op.kind == OpKind::send) {
        whole += op.payload == Payload::activations || op.payload == Payload::activations_ffn;
        shares += op.payload == Payload::activations_share;
        ffn_shares += op.payload == Payload::activations_ffn_share;
        if (op.payload == Payload::activations_gathered) {
          for (int64_t k = op.elem_begin; k < op.elem_begin + op.elem_count; ++k) {
            EXPECT_TRUE(mine[static_cast<std::size_t>(k)]) << describe_op(p, Timeline{}, static_cast<std::size_t>(&op - p.ops.data()));
          }
        }
        continue;
      }
      if (op.kind == OpKind::recv) {
        int64_t count = op.elem_count;
        if (op.payload == Payload::activations_ffn_share) {
          EXPECT_EQ(plan.chips[static_cast<std::size_t>(op.peer)].tp_rank, chip.tp_rank);
          count -= n * (chip.range.n_ffn() + 1);  // the SiLU output and amax follow the range
        }
        if (op.payload == Payload::activations_share || op.payload == Payload::activations_ffn_share ||
            op.payload == Payload::activations_gathered)
          for (int64_t k = op.elem_begin; k < op.elem_begin + count; ++k) mine[static_cast<std::size_t>(k)] = true;
        continue;
      }
      if (chip.stage == 0 || computed[{op.block, op.chip}]) continue;
      computed[{op.block, op.chip}] = true;
      EXPECT_EQ(std::count(mine.begin(), mine.end(), true), n * d) << "chip " << op.chip << " block " << op.block;
    }
    const auto blocks_count = static_cast<int64_t>(blocks.size());
    EXPECT_EQ(whole, 0);
    EXPECT_EQ(shares, 2 * 4 * blocks_count);      // stages 2 and 3, one range per chip
    EXPECT_EQ(ffn_shares, 1 * 4 * blocks_count);  // stage 1
  }
}

TEST(Schedule, ARackBeginningStageReceivesItsActivationsOverTheGlobalLinkOnce) {
  // Llama-2 70B as deployed, tp 8 x pp 72 on the 576-chip dragonfly: racks of 72 chips joined by one
  // global link per pair, so stage 9 (network chips 72..79) receives from stage 8 over one link.
  const chip::ModelConfig cfg = chip::model_preset("llama2-70b");
  PlanRequest r;
  r.n_chips = 576, r.tp = 8, r.pp = 72, r.context = 4096, r.block_tokens = 64;
  const Plan plan = make_plan(cfg, chip::ChipSpec{}, r);
  const Topology topology = topology_for(plan);
  ASSERT_EQ(topology.rack_chips(), 72);
  const int64_t d = cfg.hidden_size;
  int64_t racks_begun = 0;
  for (const auto& blocks : {decode_blocks(), prefill_blocks(64, 64)}) {
    const Program p = build_program(plan, topology, blocks);
    const int64_t n = blocks.front().n_tokens;
    for (int64_t s = 1; s < plan.pp; ++s) {
      const int64_t first = plan.network_chip(plan.at(0, s, 0).chip);
      const int64_t previous = plan.network_chip(plan.at(0, s - 1, 0).chip);
      if (first / 72 == previous / 72) continue;
      ++racks_begun;
      // Bytes of the stage's activations on each link between the two racks.
      std::map<int64_t, int64_t> between_racks;
      for (const Op& op : p.ops) {
        if (op.kind != OpKind::send) continue;
        const ChipPlan& to = plan.chips[static_cast<std::size_t>(op.peer)];
        if (to.stage != s) continue;
        int64_t activations = op.elem_count;
        if (op.payload == Payload::activations_ffn || op.payload == Payload::activations_ffn_share)
          activations -= n * (to.range.n_ffn() + 1);
        for (int32_t h = 0; h < op.hop_count; ++h) {
          const Hop& hop = p.hops[static_cast<std::size_t>(op.hop_begin + h)];
          if (hop.from / 72 != hop.to / 72) between_racks[p.link_key(hop)] += activations;
        }
      }
      ASSERT_EQ(between_racks.size(), 1u) << "stage " << s;  // the one global link
      EXPECT_EQ(between_racks.begin()->second, n * d) << "stage " << s << ": the activations once, not tp times";
    }
  }
  EXPECT_EQ(racks_begun, 2 * 7);  // 7 rack boundaries, decode and prefill
}

TEST(Schedule, EveryTransferOfAReplicaIsOnItsLinks) {
  // replica_links bounds the links a replica's programs may use (the planner models replicas that share
  // none one at a time): every hop of every send of a replica's prefill and decode programs is on it.
  chip::ModelConfig cfg = chip::model_preset("tiny");
  cfg.hidden_size = 256, cfg.n_heads = 32, cfg.n_kv_heads = 8, cfg.n_layers = 2;
  int64_t checked = 0;
  for (const char* topology_name : {"dragonfly", "chain"})
    for (const auto& [tp, pp, replicas] :
         std::vector<std::tuple<int64_t, int64_t, int64_t>>{{32, 2, 3}, {8, 6, 5}, {3, 5, 2}}) {
      PlanRequest r;
      r.n_chips = 300, r.tp = tp, r.pp = pp, r.replicas = replicas, r.batch = replicas;
      r.context = 64, r.block_tokens = 16;
      chip::ChipSpec hw;
      hw.topology = topology_name;
      const Plan plan = make_plan(cfg, hw, r);
      const Topology topology = topology_for(plan);
      for (int64_t replica = 0; replica < replicas; ++replica) {
        const std::vector<int64_t> links = replica_links(plan, topology, replica);
        for (const std::vector<Block>& blocks : {prefill_blocks(40, 16, replica), decode_blocks(replica)}) {
          const Program p = build_program(plan, topology, blocks);
          for (const Hop& hop : p.hops) {
            EXPECT_TRUE(std::binary_search(links.begin(), links.end(), p.link_key(hop)))
                << topology_name << " " << tp << "x" << pp << "x" << replicas << " replica " << replica << ": link "
                << hop.from << "->" << hop.to;
            ++checked;
          }
        }
      }
    }
  EXPECT_GT(checked, 0);
}

TEST(Schedule, AReplicaCongruentToTheFirstHasItsOpsAndTimeline) {
  // The planner models a congruent replica's prefill by the first replica's: it must be the same program
  // with chips renamed (the same collectives chosen, the same hand-offs split) and the same timeline.
  // Replicas on racks of their own are congruent; one that straddles a rack boundary is not.
  chip::ModelConfig cfg = chip::model_preset("tiny");
  cfg.hidden_size = 256, cfg.n_heads = 32, cfg.n_kv_heads = 8, cfg.n_layers = 2;
  int64_t congruent = 0, other = 0;
  for (const char* topology_name : {"dragonfly", "chain"})
    for (const auto& [tp, pp, replicas] :
         std::vector<std::tuple<int64_t, int64_t, int64_t>>{{32, 2, 3}, {8, 6, 5}, {3, 5, 2}, {16, 3, 4}}) {
      PlanRequest r;
      r.n_chips = 300, r.tp = tp, r.pp = pp, r.replicas = replicas, r.batch = replicas;
      r.context = 64, r.block_tokens = 16;
      chip::ChipSpec hw;
      hw.topology = topology_name;
      const Plan plan = make_plan(cfg, hw, r);
      const Topology topology = topology_for(plan);
      const Program first = build_program(plan, topology, {{0, 16, true, 0}});
      const Timeline first_timeline = compute_timeline(first, plan, 7);
      for (int64_t replica = 1; replica < replicas; ++replica) {
        if (!congruent_to_first_replica(plan, topology, replica)) {
          ++other;
          continue;
        }
        ++congruent;
        const Program p = build_program(plan, topology, {{0, 16, true, replica}});
        const std::string where = std::string(topology_name) + " " + std::to_string(tp) + "x" + std::to_string(pp) +
                                  "x" + std::to_string(replicas) + " replica " + std::to_string(replica);
        ASSERT_EQ(p.ops.size(), first.ops.size()) << where;
        const auto chip_shift = static_cast<int32_t>(replica * plan.chips_per_replica());
        for (std::size_t i = 0; i < p.ops.size(); ++i) {
          const Op &a = first.ops[i], &b = p.ops[i];
          EXPECT_TRUE(a.kind == b.kind && b.chip == a.chip + chip_shift && a.elem_count == b.elem_count &&
                      a.hop_count == b.hop_count && a.dep_count == b.dep_count)
              << where << ": op " << i;
        }
        for (std::size_t c = 0; c < p.collectives.size(); ++c)
          EXPECT_EQ(p.collectives[c].algorithm, first.collectives[c].algorithm) << where;
        const Timeline timeline = compute_timeline(p, plan, 7);
        EXPECT_EQ(timeline.start_cycles, first_timeline.start_cycles) << where;
        EXPECT_EQ(timeline.duration_cycles, first_timeline.duration_cycles) << where;
      }
    }
  EXPECT_GT(congruent, 0);
  EXPECT_GT(other, 0);
}
