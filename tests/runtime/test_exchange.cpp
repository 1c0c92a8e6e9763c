#include <gtest/gtest.h>

#include <map>
#include <tuple>

#include "partition/plan.hpp"
#include "partition/schedule.hpp"
#include "partition/timing.hpp"
#include "runtime/engine.hpp"
#include "runtime/exchange.hpp"

using namespace lpurt;
using partition::OpKind;

namespace {

struct Layout {
  int64_t chips, tp, pp, ranks;
};

partition::Plan plan_for(const char* preset, const Layout& l) {
  partition::PlanRequest r;
  r.n_chips = l.chips;
  r.tp = l.tp;
  r.pp = l.pp;
  r.context = 64;
  r.block_tokens = 2;
  return partition::make_plan(chip::model_preset(preset), chip::ChipSpec{}, r);
}

std::vector<int> owners(const partition::Plan& plan, int n_ranks) {
  std::vector<int> owner(static_cast<std::size_t>(plan.n_chips()));
  for (int64_t c = 0; c < plan.n_chips(); ++c)
    owner[static_cast<std::size_t>(c)] = runtime::Engine::rank_of_chip(c, plan.n_chips(), n_ranks);
  return owner;
}

/// The index of the first compute op at or after `op` (the end of its round).
std::size_t round_end(const partition::Program& p, std::size_t op) {
  while (op < p.ops.size() && (p.ops[op].kind == OpKind::send || p.ops[op].kind == OpKind::recv)) ++op;
  return op;
}

}  // namespace

// Rank A's messages to B and B's messages from A must pair up one to one (same tag, size and segments, in
// order), and together carry every transfer between the two ranks exactly once, in its own round.
TEST(Exchange, EveryRankPairAgreesOnEveryMessage) {
  const Layout layouts[] = {{2, 2, 1, 2}, {4, 4, 1, 2}, {8, 4, 2, 3}, {12, 3, 4, 4}, {6, 2, 3, 5}, {8, 2, 2, 3}};
  for (const char* preset : {"tiny", "tiny-mixtral"})
    for (const Layout& l : layouts)
      for (const int64_t trailer : {0, 8})
        for (const int64_t n_tokens : {1, 5}) {
          SCOPED_TRACE(std::string(preset) + " tp " + std::to_string(l.tp) + " pp " + std::to_string(l.pp) + " ranks " +
                       std::to_string(l.ranks) + " tokens " + std::to_string(n_tokens));
          const partition::Plan plan = plan_for(preset, l);
          const auto topology = partition::topology_for(plan);
          const partition::Program p =
              partition::build_program(plan, topology, partition::prefill_blocks(n_tokens, plan.shape.block_tokens));
          const std::vector<int> owner = owners(plan, static_cast<int>(l.ranks));
          std::vector<runtime::Exchange> ex;
          for (int r = 0; r < l.ranks; ++r) ex.push_back(runtime::build_exchange(p, owner, 0, r, trailer));

          // [from, to] -> messages in order, each as (tag, bytes, [(send op, recv op, offset)])
          using Parts = std::vector<std::tuple<int32_t, int32_t, int64_t>>;
          std::map<std::pair<int, int>, std::vector<std::tuple<int, int64_t, Parts>>> sent, received;
          std::map<int32_t, int> seen;  // send op -> times carried (sender side)
          for (int r = 0; r < l.ranks; ++r) {
            const runtime::Exchange& e = ex[static_cast<std::size_t>(r)];
            int64_t max_out = 0, max_in = 0;
            for (std::size_t k = 0; k < e.rounds.size(); ++k) {
              const runtime::Round& round = e.rounds[k];
              if (k > 0) {
                EXPECT_LT(e.rounds[k - 1].first_op, round.first_op);
              }
              const std::size_t end = round_end(p, static_cast<std::size_t>(round.first_op));
              int64_t out = 0, in = 0;
              for (int32_t m = round.message_begin; m < round.message_begin + round.message_count; ++m) {
                const runtime::Message& msg = e.messages[static_cast<std::size_t>(m)];
                EXPECT_EQ(msg.tag, round.first_op % 32768);
                EXPECT_NE(msg.peer_rank, r);
                EXPECT_EQ(msg.offset_bytes, msg.incoming ? in : out);
                Parts parts;
                int64_t bytes = 0;
                for (int32_t s = msg.segment_begin; s < msg.segment_begin + msg.segment_count; ++s) {
                  const runtime::Segment& seg = e.segments[static_cast<std::size_t>(s)];
                  const partition::Op& op = p.ops[static_cast<std::size_t>(seg.op)];
                  ASSERT_EQ(op.kind, msg.incoming ? OpKind::recv : OpKind::send);
                  EXPECT_EQ(owner[static_cast<std::size_t>(op.chip)], r);
                  EXPECT_EQ(owner[static_cast<std::size_t>(op.peer)], msg.peer_rank);
                  const auto send = static_cast<std::size_t>(msg.incoming ? op.match : seg.op);
                  const auto recv = static_cast<std::size_t>(msg.incoming ? seg.op : op.match);
                  EXPECT_GE(std::min(send, recv), static_cast<std::size_t>(round.first_op));
                  EXPECT_LT(std::max(send, recv), end);  // inside the round
                  EXPECT_EQ(seg.offset_bytes, bytes);
                  bytes += op.bytes + trailer;
                  parts.emplace_back(static_cast<int32_t>(send), static_cast<int32_t>(recv), seg.offset_bytes);
                  if (!msg.incoming) ++seen[static_cast<int32_t>(send)];
                }
                EXPECT_EQ(msg.bytes, bytes);
                (msg.incoming ? in : out) += bytes;
                auto& list = msg.incoming ? received[{msg.peer_rank, r}] : sent[{r, msg.peer_rank}];
                list.emplace_back(msg.tag, msg.bytes, parts);
              }
              max_out = std::max(max_out, out);
              max_in = std::max(max_in, in);
            }
            EXPECT_EQ(e.max_outgoing_bytes, max_out);
            EXPECT_EQ(e.max_incoming_bytes, max_in);
          }
          EXPECT_EQ(sent, received);
          int64_t inter_rank = 0;
          for (std::size_t i = 0; i < p.ops.size(); ++i) {
            const partition::Op& op = p.ops[i];
            if (op.kind != OpKind::send || owner[static_cast<std::size_t>(op.chip)] == owner[static_cast<std::size_t>(op.peer)])
              continue;
            ++inter_rank;
            EXPECT_EQ(seen[static_cast<int32_t>(i)], 1) << "send op " << i;
          }
          EXPECT_EQ(static_cast<int64_t>(seen.size()), inter_rank);
          if (l.ranks > 1 && (l.tp > 1 || l.pp > 1)) {
            EXPECT_GT(inter_rank, 0);
          }
        }
}

// The point of the exchange: a tp 8 stage split over two ranks sends one message per collective step to
// the other rank, not sixteen.
TEST(Exchange, OneMessagePerRankPairAndRound) {
  const partition::Plan plan = plan_for("tiny", {8, 8, 1, 2});
  const partition::Program p = partition::build_program(plan, partition::topology_for(plan), {{0, 1, true}});
  const runtime::Exchange e = runtime::build_exchange(p, owners(plan, 2), 0, 0, 0);
  // Per layer: the amax all-gather, the reduce-scatter and the all-gather, after attention and after the
  // FFN; before the layers, the embedding's reduce-scatter and all-gather.
  const int64_t rounds = 2 + 6 * plan.model.n_layers;
  ASSERT_EQ(static_cast<int64_t>(e.rounds.size()), rounds);
  for (const runtime::Round& r : e.rounds) EXPECT_EQ(r.message_count, 2);  // one each way
  EXPECT_EQ(static_cast<int64_t>(e.messages.size()), 2 * rounds);
  for (const runtime::Message& m : e.messages) EXPECT_EQ(m.segment_count, 16);  // 4 chips x 4 peers
}

// Replica r runs the replica-0 program with its chips offset: its messages connect the ranks that host it.
TEST(Exchange, ReplicasUseTheirOwnRanks) {
  partition::PlanRequest r;
  r.n_chips = 8;
  r.tp = 2;
  r.pp = 1;
  r.replicas = 4;
  r.batch = 4;
  r.context = 64;
  const partition::Plan plan = partition::make_plan(chip::model_preset("tiny"), chip::ChipSpec{}, r);
  const partition::Program p = partition::build_program(plan, partition::topology_for(plan), {{0, 1, true}});
  // 8 chips on 3 ranks: [0, 1] [2, 3, 4] [5, 6, 7]; replica 2 (chips 4, 5) spans ranks 1 and 2.
  const std::vector<int> owner = owners(plan, 3);
  const runtime::Exchange on1 = runtime::build_exchange(p, owner, 4, 1, 0), on0 = runtime::build_exchange(p, owner, 4, 0, 0);
  ASSERT_FALSE(on1.messages.empty());
  for (const runtime::Message& m : on1.messages) EXPECT_EQ(m.peer_rank, 2);
  EXPECT_TRUE(on0.rounds.empty());
  EXPECT_TRUE(runtime::build_exchange(p, owner, 0, 0, 0).rounds.empty());  // replica 0: chips 0, 1 on rank 0
}
