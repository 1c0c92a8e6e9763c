#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <tuple>

#include "partition/schedule.hpp"
#include "partition/serve_metrics.hpp"
#include "partition/serving.hpp"
#include "partition/timing.hpp"
#include "partition/workload.hpp"

using namespace lpurt;
using namespace lpurt::partition;

namespace {

constexpr int64_t page_tokens = 16;  ///< the simulations' KV page

Plan serve_plan_for(int64_t tp, int64_t pp, int64_t replicas, int64_t slots, int64_t context = 128,
                    const chip::ChipSpec& hw = {}, int64_t kv_pool_tokens = 0) {
  PlanRequest r;
  r.kv_pool_tokens = kv_pool_tokens;
  r.n_chips = tp * pp * replicas;
  r.tp = tp;
  r.pp = pp;
  r.replicas = replicas;
  r.batch = replicas * slots;
  r.context = context;
  r.block_tokens = 16;
  return make_plan(chip::model_preset("tiny"), hw, r);
}

std::vector<ServeRequest> workload(int64_t n, double rate, const std::string& prompts, const std::string& outputs,
                                   uint64_t seed) {
  WorkloadSpec spec;
  spec.rate_per_s = rate;
  spec.n_requests = n;
  spec.prompt = parse_length_dist(prompts, "--prompt-len-dist");
  spec.output = parse_length_dist(outputs, "--tokens-dist");
  spec.seed = seed;
  return generate_workload(spec);
}

ServeOutcome simulate(const Plan& plan, const std::vector<ServeRequest>& requests, ServePolicy policy,
                      ServeRouter router = ServeRouter::round_robin) {
  ServeCosts costs(plan, requests);
  ServeOptions options;
  options.policy = policy;
  options.router = router;
  options.kv_page_tokens = page_tokens;
  options.record_turns = true;
  return simulate_serving(plan, costs, requests, options);
}

/// The invariants every policy keeps: each request is admitted, fed its whole prompt in order and decoded
/// token by token, in a slot that it holds alone; a preempted one starts again from position 0, prefilling
/// its prompt and the tokens it had, and none is served twice; the KV pages never exceed the pool.
void expect_served_exactly_once(const Plan& plan, const std::vector<ServeRequest>& requests, const ServeOutcome& out) {
  ASSERT_EQ(out.requests.size(), requests.size());
  std::map<int64_t, std::vector<const Turn*>> turns_of;
  for (const Turn& t : out.turns) turns_of[t.request].push_back(&t);
  int64_t preemptions = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const ServeRequest& r = requests[i];
    const RequestOutcome& o = out.requests[i];
    preemptions += o.preemptions;
    EXPECT_EQ(o.rejected, kv_positions(r) > plan.shape.context ||
                              (kv_positions(r) + page_tokens - 1) / page_tokens > out.kv_pages_per_replica)
        << "request " << i;
    if (o.rejected) {
      EXPECT_EQ(turns_of.count(static_cast<int64_t>(i)), 0u);
      continue;
    }
    EXPECT_LE(o.arrived_cycles, o.admitted_cycles) << "request " << i;
    EXPECT_LT(o.admitted_cycles, o.first_token_cycles) << "request " << i;
    EXPECT_LE(o.first_token_cycles, o.finished_cycles) << "request " << i;
    EXPECT_GE(o.replica, 0);
    EXPECT_LT(o.replica, plan.replicas);
    EXPECT_GE(o.slot, 0);
    EXPECT_LT(o.slot, plan.shape.n_slots);
    // Positions 0 .. P + K - 2 fed in order (from 0 again after a preemption, up to the tokens out); K
    // tokens out; a turn that feeds a generated token enters the pipeline only once that token is out.
    int64_t next_position = 0, emitted = 0, last_output = -1, restarts = 0, prefill_target = r.prompt_tokens;
    for (const Turn* t : turns_of[static_cast<int64_t>(i)]) {
      if (t->position == 0 && next_position > 0) {
        ++restarts;
        next_position = 0;
        prefill_target = r.prompt_tokens + emitted;
      }
      if (t->position + t->n_tokens > r.prompt_tokens && t->position + t->n_tokens >= prefill_target) {
        EXPECT_GE(t->entry_cycles, last_output) << "request " << i << " position " << t->position;
      }
      if (t->emits_token) {
        if (emitted == 0) {
          EXPECT_EQ(t->output_cycles, o.first_token_cycles) << "request " << i;
        }
        last_output = t->output_cycles;
      }
      EXPECT_EQ(t->position, next_position) << "request " << i;
      EXPECT_EQ(t->replica, o.replica);
      EXPECT_GE(t->slot, 0);
      EXPECT_LT(t->slot, plan.shape.n_slots);
      if (t->position >= prefill_target) {
        EXPECT_EQ(t->n_tokens, 1);
      } else {
        EXPECT_LE(t->position + t->n_tokens, prefill_target);
      }
      EXPECT_EQ(t->emits_token, t->position + t->n_tokens >= prefill_target) << "request " << i;
      next_position += t->n_tokens;
      emitted += t->emits_token ? 1 : 0;
    }
    EXPECT_EQ(last_output, o.finished_cycles) << "request " << i;
    EXPECT_EQ(next_position, kv_positions(r)) << "request " << i;
    EXPECT_EQ(emitted, r.output_tokens) << "request " << i;
    EXPECT_LE(restarts, o.preemptions) << "request " << i;
  }
  EXPECT_EQ(preemptions, out.preemptions);
  // A slot holds one request at a time: once another request's turn appears in it, the previous one has
  // finished or been preempted (its next turn, if any, starts again at position 0); no turn after the last
  // token.
  std::map<std::pair<int64_t, int64_t>, int64_t> holder;
  std::map<int64_t, std::pair<int64_t, int64_t>> slot_of;  // the slot of each request's last turn
  std::set<int64_t> evicted;
  std::map<int64_t, int64_t> emitted;
  for (const Turn& t : out.turns) {
    const auto key = std::make_pair(t.replica, t.slot);
    EXPECT_LT(emitted[t.request], requests[static_cast<std::size_t>(t.request)].output_tokens)
        << "request " << t.request << " has a turn after its last token";
    if (evicted.erase(t.request) > 0) {
      EXPECT_EQ(t.position, 0) << "request " << t.request << " went on after another took its slot";
    }
    auto it = holder.find(key);
    if (it != holder.end() && it->second != t.request && slot_of[it->second] == key) evicted.insert(it->second);
    holder[key] = t.request;
    slot_of[t.request] = key;
    emitted[t.request] += t.emits_token ? 1 : 0;
  }
  // A replica's turns enter its first stage one at a time.
  std::map<int64_t, int64_t> last_entry;
  for (const Turn& t : out.turns) {
    auto it = last_entry.find(t.replica);
    if (it != last_entry.end()) {
      EXPECT_GT(t.entry_cycles, it->second) << "replica " << t.replica;
    }
    last_entry[t.replica] = t.entry_cycles;
  }
  // KV pages within capacity at every moment, and all given back at the end.
  EXPECT_LE(out.max_kv_pages_in_use, out.kv_pages_per_replica);
  for (const ServeSample& s : out.samples) {
    EXPECT_LE(s.kv_pages, out.kv_pages_per_replica * plan.replicas);
    EXPECT_GE(s.kv_pages, 0);
    EXPECT_GE(s.queued, 0);
    EXPECT_LE(s.active, plan.shape.n_slots * plan.replicas);
  }
  ASSERT_FALSE(out.samples.empty());
  EXPECT_EQ(out.samples.back().kv_pages, 0);
  EXPECT_EQ(out.samples.back().active, 0);
  EXPECT_EQ(out.samples.back().queued, 0);
  EXPECT_EQ(out.n_turns, static_cast<int64_t>(out.turns.size()));
}

}  // namespace

TEST(BlockCosts, EqualTheSolvedTimelineAtEveryPosition) {
  for (const auto& [tp, pp] : {std::pair<int64_t, int64_t>{2, 2}, {1, 3}}) {
    const Plan plan = serve_plan_for(tp, pp, 1, 2);
    const Topology topology = topology_for(plan);
    for (const int64_t n_tokens : {int64_t{1}, int64_t{4}, int64_t{16}}) {
      const Program program = build_program(plan, topology, {{0, n_tokens, true, 0}});
      const int64_t n = plan.shape.context - n_tokens + 1;
      int64_t solves = 0;
      const std::vector<BlockCost> costs = block_costs(plan, program, 0, n, &solves);
      ASSERT_EQ(static_cast<int64_t>(costs.size()), n);
      EXPECT_LT(solves, n) << "interpolation solved every position";
      for (int64_t p = 0; p < n; ++p) {
        const Timeline t = compute_timeline(program, plan, p);
        const DecodePace pace = decode_pace(plan, program, t);
        int64_t busy = 0;
        for (std::size_t i = 0; i < program.ops.size(); ++i)
          if (program.ops[i].kind != OpKind::send && program.ops[i].kind != OpKind::recv) busy += t.duration_cycles[i];
        const BlockCost& c = costs[static_cast<std::size_t>(p)];
        ASSERT_EQ(c.latency_cycles, pace.latency_cycles)
            << "tp " << tp << " pp " << pp << " n " << n_tokens << " position " << p;
        ASSERT_EQ(c.busiest_stage_cycles, pace.busiest_stage_cycles) << "position " << p;
        ASSERT_EQ(c.busy_chip_cycles, busy) << "position " << p;
      }
    }
  }
}

// Chips that differ in heads (tp does not divide them) or in speed have attention ops of several
// durations: the steps between solved ones are still taken from their decisions, only where those
// provably hold, and give the solved timeline's values at every position.
TEST(BlockCosts, EqualTheSolvedTimelineAtEveryPositionWhenChipsDifferInHeadsOrSpeed) {
  chip::ChipSpec slow_chip;
  slow_chip.chip_speed_factors[1] = 0.75;
  int64_t interpolated = 0;
  for (const auto& [tp, pp, hw] : std::vector<std::tuple<int64_t, int64_t, chip::ChipSpec>>{
           {3, 1, chip::ChipSpec{}}, {3, 2, chip::ChipSpec{}}, {5, 2, chip::ChipSpec{}}, {6, 3, chip::ChipSpec{}},
           {2, 2, slow_chip}, {3, 2, slow_chip}}) {
    const Plan plan = serve_plan_for(tp, pp, 1, 2, 128, hw);
    const Topology topology = topology_for(plan);
    for (const int64_t n_tokens : {int64_t{1}, int64_t{16}}) {
      const Program program = build_program(plan, topology, {{0, n_tokens, true, 0}});
      const int64_t n = plan.shape.context - n_tokens + 1;
      int64_t solves = 0;
      const std::vector<BlockCost> costs = block_costs(plan, program, 0, n, &solves);
      ASSERT_EQ(static_cast<int64_t>(costs.size()), n);
      interpolated += n - solves;
      for (int64_t p = 0; p < n; ++p) {
        const DecodePace pace = decode_pace(plan, program, compute_timeline(program, plan, p));
        const BlockCost& c = costs[static_cast<std::size_t>(p)];
        ASSERT_EQ(c.latency_cycles, pace.latency_cycles) << "tp " << tp << " pp " << pp << " n " << n_tokens << " position " << p;
        ASSERT_EQ(c.busiest_stage_cycles, pace.busiest_stage_cycles) << "tp " << tp << " pp " << pp << " position " << p;
      }
      // The whole run's figures, step by step: the same periods and critical-path split as every step solved.
      if (n_tokens != 1) continue;
      const int64_t prompt = 5, tokens = 100;
      const ModelledTimes m = modelled_times(plan, prompt, tokens);
      int64_t decode = 0, transfer = 0;
      for (int64_t p = prompt; p < prompt + tokens - 1; ++p) {
        const Timeline t = compute_timeline(program, plan, p);
        decode += decode_period_cycles(plan, program, t);
        transfer += profile(program, t, plan.hardware).critical_transfer_cycles;
      }
      EXPECT_EQ(m.decode_cycles, decode) << "tp " << tp << " pp " << pp;
      EXPECT_DOUBLE_EQ(m.tpot_transfer_s, static_cast<double>(transfer) / static_cast<double>(tokens - 1) / plan.hardware.clock_hz);
    }
  }
  EXPECT_GT(interpolated, 0) << "interpolation solved every position";
}

TEST(Workload, GenerationIsDeterministicAndStreamsAreIndependent) {
  const auto a = workload(200, 50, "uniform:4:40", "zipf:1.2:30", 9);
  const auto b = workload(200, 50, "uniform:4:40", "zipf:1.2:30", 9);
  const auto c = workload(200, 50, "uniform:4:40", "uniform:1:8", 9);
  const auto d = workload(200, 50, "uniform:4:40", "zipf:1.2:30", 10);
  bool differs = false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].arrived_at_s, b[i].arrived_at_s);
    EXPECT_EQ(a[i].prompt_tokens, b[i].prompt_tokens);
    EXPECT_EQ(a[i].output_tokens, b[i].output_tokens);
    // Another output distribution leaves arrivals and prompts as they were.
    EXPECT_EQ(a[i].arrived_at_s, c[i].arrived_at_s);
    EXPECT_EQ(a[i].prompt_tokens, c[i].prompt_tokens);
    differs = differs || a[i].prompt_tokens != d[i].prompt_tokens;
  }
  EXPECT_TRUE(differs) << "another seed draws other lengths";
  EXPECT_EQ(a[0].arrived_at_s, 0.0);
}

TEST(Workload, DistributionsHaveTheirMoments) {
  WorkloadSpec spec;
  spec.rate_per_s = 10;
  spec.n_requests = 40000;
  spec.prompt = parse_length_dist("uniform:3:7", "--prompt-len-dist");
  spec.output = parse_length_dist("zipf:1.5:50", "--tokens-dist");
  auto gaps = [](const std::vector<ServeRequest>& r) {
    double sum = 0, sum2 = 0;
    for (std::size_t i = 1; i < r.size(); ++i) {
      const double g = r[i].arrived_at_s - r[i - 1].arrived_at_s;
      sum += g, sum2 += g * g;
    }
    const double n = static_cast<double>(r.size() - 1), mean = sum / n;
    return std::make_pair(mean, std::sqrt(sum2 / n - mean * mean) / mean);
  };
  const auto poisson = generate_workload(spec);
  const auto [mean, cv] = gaps(poisson);
  EXPECT_NEAR(mean, 0.1, 0.003);
  EXPECT_NEAR(cv, 1.0, 0.03);
  std::map<int64_t, int64_t> prompt_counts, output_counts;
  for (const auto& r : poisson) ++prompt_counts[r.prompt_tokens], ++output_counts[r.output_tokens];
  EXPECT_EQ(prompt_counts.size(), 5u);
  EXPECT_EQ(prompt_counts.begin()->first, 3);
  EXPECT_EQ(prompt_counts.rbegin()->first, 7);
  for (const auto& [value, count] : prompt_counts) EXPECT_NEAR(static_cast<double>(count), 8000.0, 400.0) << value;
  EXPECT_GE(output_counts.begin()->first, 1);
  EXPECT_LE(output_counts.rbegin()->first, 50);
  EXPECT_GT(output_counts[1], output_counts[2]);
  EXPECT_GT(output_counts[2], output_counts[4]);
  // P(1) of zipf(1.5, 50): 1 / sum k^-1.5.
  double h = 0;
  for (int k = 1; k <= 50; ++k) h += std::pow(k, -1.5);
  EXPECT_NEAR(static_cast<double>(output_counts[1]) / 40000.0, 1.0 / h, 0.01);
  for (const double want_cv : {0.5, 3.0}) {
    spec.arrivals = Arrivals::gamma;
    spec.cv = want_cv;
    const auto [gamma_mean, gamma_cv] = gaps(generate_workload(spec));
    EXPECT_NEAR(gamma_mean, 0.1, 0.01) << want_cv;
    EXPECT_NEAR(gamma_cv, want_cv, 0.1 * want_cv) << want_cv;
  }
}

TEST(Workload, BadSpecsAreRefusedByName) {
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const WorkloadError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(
      message([] { parse_length_dist("uniform:9:3", "--prompt-len-dist"); }).find("--prompt-len-dist uniform:9:3"),
      std::string::npos);
  EXPECT_NE(message([] { parse_length_dist("zipf:0:10", "--tokens-dist"); }).find("zipf:S:MAX needs 0 < S"),
            std::string::npos);
  EXPECT_NE(
      message([] { parse_length_dist("normal:3:4", "--tokens-dist"); }).find("expected uniform:A:B or zipf:S:MAX"),
      std::string::npos);
  WorkloadSpec spec;
  spec.rate_per_s = 0;
  EXPECT_NE(message([&] { generate_workload(spec); }).find("--rate must be above 0"), std::string::npos);
}

TEST(Workload, TracesReadVidurColumnsAndNameTheirErrors) {
  const auto r = parse_workload_csv(
      "arrived_at,num_prefill_tokens,num_decode_tokens,num_total_tokens,prompt\n"
      "0.0,3,2,5,\"5 6 7\"\n"
      "\n"
      "0.25,2,1.0,3,1 2\n",
      "w.csv");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].prompt, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(r[1].arrived_at_s, 0.25);
  EXPECT_EQ(r[1].output_tokens, 1);
  EXPECT_EQ(r[1].id, 1);
  const auto without_prompt = parse_workload_csv("num_decode_tokens,arrived_at,num_prefill_tokens\n4,1.5,8\n", "w.csv");
  EXPECT_TRUE(without_prompt[0].prompt.empty());
  EXPECT_EQ(without_prompt[0].prompt_tokens, 8);
  auto message = [](const std::string& text) {
    try {
      parse_workload_csv(text, "w.csv");
    } catch (const WorkloadError& e) {
      EXPECT_EQ(e.code(), ExitCode::input);
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(
      message("arrived_at,num_prefill_tokens\n0,3\n").find("w.csv:1: the header has no column \"num_decode_tokens\""),
      std::string::npos);
  EXPECT_NE(message("arrived_at,num_prefill_tokens,num_decode_tokens\n0,3,2\n1,x,2\n")
                .find("w.csv:3: num_prefill_tokens \"x\""),
            std::string::npos);
  EXPECT_NE(message("arrived_at,num_prefill_tokens,num_decode_tokens,prompt\n0,3,2,1 2\n")
                .find("w.csv:2: the prompt has 2 tokens but num_prefill_tokens is 3"),
            std::string::npos);
  EXPECT_NE(message("arrived_at,num_prefill_tokens,num_decode_tokens\n-1,3,2\n").find("arrived_at \"-1\""),
            std::string::npos);
  EXPECT_NE(message("arrived_at,num_prefill_tokens,num_decode_tokens\n0,0,2\n").find("num_prefill_tokens must be 1"),
            std::string::npos);
  EXPECT_NE(message("arrived_at,num_prefill_tokens,num_decode_tokens\n").find("no request"), std::string::npos);
}

TEST(Serving, EveryPolicyServesEachRequestOnceWithinTheKvCache) {
  for (const ServePolicy policy : {ServePolicy::decode_priority, ServePolicy::static_batch})
    for (const ServeRouter router : {ServeRouter::round_robin, ServeRouter::least_loaded})
      for (const auto& [pp, replicas, slots] : {std::tuple<int64_t, int64_t, int64_t>{2, 1, 3}, {1, 3, 1}, {3, 2, 4}}) {
        SCOPED_TRACE(std::string(policy_name(policy)) + " " + router_name(router) + " pp " + std::to_string(pp) +
                     " replicas " + std::to_string(replicas) + " slots " + std::to_string(slots));
        const Plan plan = serve_plan_for(1, pp, replicas, slots);
        // Some requests are longer than the context of 128: rejected, counted.
        const auto requests = workload(60, 2e5, "uniform:1:100", "uniform:1:60", 3);
        const ServeOutcome out = simulate(plan, requests, policy, router);
        expect_served_exactly_once(plan, requests, out);
        int64_t rejected = 0;
        for (const auto& o : out.requests) rejected += o.rejected ? 1 : 0;
        EXPECT_GT(rejected, 0);
        EXPECT_LT(rejected, 60);
        // Deterministic: the same inputs give the same decisions.
        const ServeOutcome again = simulate(plan, requests, policy, router);
        ASSERT_EQ(again.turns.size(), out.turns.size());
        for (std::size_t i = 0; i < out.requests.size(); ++i) {
          EXPECT_EQ(again.requests[i].finished_cycles, out.requests[i].finished_cycles);
          EXPECT_EQ(again.requests[i].slot, out.requests[i].slot);
        }
      }
}

TEST(Serving, ASharedKvPoolPreemptsTheLatestAndRecomputes) {
  // 4 slots of 128 positions share 6 pages of 16 (96 positions): requests of more than 96 KV positions are
  // rejected, the others preempt one another under decode-priority; static-batch reserves whole requests.
  const Plan full = serve_plan_for(1, 2, 2, 4);
  const Plan plan = serve_plan_for(1, 2, 2, 4, 128, {}, 6 * page_tokens);
  for (std::size_t c = 0; c < plan.chips.size(); ++c)
    EXPECT_EQ(plan.chips[c].sram.kv_cache_bytes * 4 * 128, full.chips[c].sram.kv_cache_bytes * 6 * page_tokens);
  const auto requests = workload(60, 2e5, "uniform:1:80", "uniform:1:40", 7);
  const ServeOutcome out = simulate(plan, requests, ServePolicy::decode_priority);
  EXPECT_EQ(out.kv_pages_per_replica, 6);
  expect_served_exactly_once(plan, requests, out);
  EXPECT_GT(out.preemptions, 0);
  EXPECT_EQ(out.max_kv_pages_in_use, 6);
  int64_t rejected = 0;
  for (const auto& o : out.requests) rejected += o.rejected ? 1 : 0;
  EXPECT_GT(rejected, 0);
  // Every request that fits finishes.
  for (const auto& o : out.requests) EXPECT_TRUE(o.rejected || o.finished_cycles > 0);
  const ServeOutcome batch = simulate(plan, requests, ServePolicy::static_batch);
  expect_served_exactly_once(plan, requests, batch);
  EXPECT_EQ(batch.preemptions, 0);
  EXPECT_LE(batch.max_kv_pages_in_use, 6);
  // Every slot's context in the pool: nothing to preempt, the figures of the plan without a pool.
  const Plan roomy = serve_plan_for(1, 2, 2, 4, 128, {}, 4 * 128);
  const ServeOutcome a = simulate(roomy, requests, ServePolicy::decode_priority);
  const ServeOutcome b = simulate(full, requests, ServePolicy::decode_priority);
  EXPECT_EQ(a.preemptions, 0);
  ASSERT_EQ(a.turns.size(), b.turns.size());
  for (std::size_t i = 0; i < a.requests.size(); ++i)
    EXPECT_EQ(a.requests[i].finished_cycles, b.requests[i].finished_cycles);
  // The SRAM bounds the pool: the largest that fits does, one position more does not.
  const int64_t most = full.max_kv_tokens();
  EXPECT_GT(most, 4 * 128);
  EXPECT_NO_THROW(serve_plan_for(1, 2, 2, 4, 128, {}, most));
  EXPECT_THROW(serve_plan_for(1, 2, 2, 4, 128, {}, most + 1), chip::CapacityError);
}

TEST(Serving, StageSlicesFollowTheScheduleAndNeverOverlapOnAStage) {
  const Plan plan = serve_plan_for(1, 3, 2, 3);
  const auto requests = workload(40, 2e5, "uniform:1:60", "uniform:1:30", 9);
  for (const ServePolicy policy : {ServePolicy::decode_priority, ServePolicy::static_batch}) {
    SCOPED_TRACE(policy_name(policy));
    const ServeOutcome out = simulate(plan, requests, policy);
    const auto slices = stage_slices(plan, out, 1'000'000);
    ASSERT_EQ(slices.size(), out.turns.size() * 3);
    std::map<std::pair<int64_t, int64_t>, int64_t> stage_free;  // (replica, stage) -> end of its last slice
    std::set<int64_t> seen_replica;
    const Topology topology = topology_for(plan);
    for (std::size_t k = 0; k < slices.size(); ++k) {
      const StageSlice& slice = slices[k];
      const Turn& turn = out.turns[static_cast<std::size_t>(slice.turn)];
      EXPECT_EQ(slice.turn, static_cast<int64_t>(k / 3));
      EXPECT_EQ(slice.stage, static_cast<int64_t>(k % 3));
      EXPECT_GE(slice.start_cycles, turn.entry_cycles);
      EXPECT_LT(slice.start_cycles, slice.end_cycles);
      if (slice.stage > 0) {
        EXPECT_GT(slice.start_cycles, slices[k - 1].start_cycles);
      }
      int64_t& free = stage_free[{turn.replica, slice.stage}];
      EXPECT_GE(slice.start_cycles, free) << "turn " << slice.turn << " stage " << slice.stage;
      free = slice.end_cycles;
      // A replica's first turn waits for nobody: its spans are its program's, from its entry, and its last
      // stage ends no later than its output.
      if (slice.stage == 0 && seen_replica.insert(turn.replica).second) {
        const Program program = build_program(plan, topology, {{0, turn.n_tokens, true, turn.replica}});
        const Timeline timeline = compute_timeline(program, plan, turn.position);
        const auto spans = block_stage_spans(plan, program, turn.position, 1);
        for (int64_t s = 0; s < 3; ++s) {
          EXPECT_EQ(slices[k + static_cast<std::size_t>(s)].start_cycles, turn.entry_cycles + spans[s].first_cycles);
          EXPECT_EQ(slices[k + static_cast<std::size_t>(s)].end_cycles, turn.entry_cycles + spans[s].last_cycles);
        }
        EXPECT_LE(spans[2].last_cycles, timeline.makespan_cycles);
        EXPECT_LE(slices[k + 2].end_cycles, turn.output_cycles);
      }
    }
    // Bounded: the first turns only.
    EXPECT_EQ(stage_slices(plan, out, 5).size(), 15u);
  }
}

TEST(Serving, RoundRobinDealsRequestsInArrivalOrder) {
  const Plan plan = serve_plan_for(1, 1, 3, 2);
  auto requests = workload(30, 1e4, "uniform:1:20", "uniform:1:10", 5);
  std::reverse(requests.begin(), requests.end());  // trace order is not arrival order
  for (std::size_t i = 0; i < requests.size(); ++i) requests[i].id = static_cast<int64_t>(i);
  const ServeOutcome out = simulate(plan, requests, ServePolicy::decode_priority);
  std::vector<std::size_t> order(requests.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return out.requests[a].arrived_cycles < out.requests[b].arrived_cycles;
  });
  for (std::size_t k = 0; k < order.size(); ++k) EXPECT_EQ(out.requests[order[k]].replica, static_cast<int64_t>(k % 3));
}

TEST(Serving, LeastLoadedSendsEachRequestToTheEmptiestReplica) {
  // Three requests at once go to replicas 0, 1, 2 (ties to the lowest index). The fourth arrives while
  // request 0's long output still runs and the others are done: replica 1, where round-robin says 0.
  const Plan plan = serve_plan_for(1, 1, 3, 2, 256);
  std::vector<ServeRequest> requests = {
      {0, 0.0, 8, 200, {}}, {1, 0.0, 8, 1, {}}, {2, 0.0, 8, 1, {}}, {3, 50e-6, 8, 1, {}}};
  const ServeOutcome out = simulate(plan, requests, ServePolicy::decode_priority, ServeRouter::least_loaded);
  ASSERT_GT(out.requests[0].finished_cycles, out.requests[3].arrived_cycles);
  ASSERT_LT(out.requests[2].finished_cycles, out.requests[3].arrived_cycles);
  EXPECT_EQ(out.requests[0].replica, 0);
  EXPECT_EQ(out.requests[1].replica, 1);
  EXPECT_EQ(out.requests[2].replica, 2);
  EXPECT_EQ(out.requests[3].replica, 1);
  EXPECT_EQ(simulate(plan, requests, ServePolicy::decode_priority, ServeRouter::round_robin).requests[3].replica, 0);
}

TEST(Serving, DecodePriorityAdmitsInArrivalOrderAndDecodesBeforePrefill) {
  const Plan plan = serve_plan_for(1, 3, 1, 3);
  const auto requests = workload(80, 3e5, "uniform:1:60", "uniform:1:40", 11);
  const ServeOutcome out = simulate(plan, requests, ServePolicy::decode_priority);
  expect_served_exactly_once(plan, requests, out);
  // FCFS admission: in arrival order, admissions never go back in time.
  int64_t last_admitted = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (out.requests[i].rejected) continue;
    EXPECT_GE(out.requests[i].admitted_cycles, last_admitted) << "request " << i;
    last_admitted = out.requests[i].admitted_cycles;
  }
  // Within an iteration: decode turns first, then prefill chunks in admission order (the earlier-admitted
  // request's chunks before a later one's), and at least one prefill token if any request waits for it.
  std::map<int64_t, std::vector<const Turn*>> by_iteration;
  for (const Turn& t : out.turns) by_iteration[t.iteration].push_back(&t);
  int64_t mixed = 0;
  for (const auto& [iteration, turns] : by_iteration) {
    bool prefill_seen = false;
    int64_t last_admitted_prefill = -1;
    for (const Turn* t : turns) {
      const bool decode = t->position >= requests[static_cast<std::size_t>(t->request)].prompt_tokens;
      if (decode) {
        EXPECT_FALSE(prefill_seen) << "iteration " << iteration << ": a decode turn after a prefill chunk";
      }
      if (!decode) {
        const int64_t admitted = out.requests[static_cast<std::size_t>(t->request)].admitted_cycles;
        EXPECT_GE(admitted, last_admitted_prefill) << "iteration " << iteration;
        last_admitted_prefill = admitted;
      }
      prefill_seen = prefill_seen || !decode;
    }
    mixed += prefill_seen &&
             turns.front()->position >= requests[static_cast<std::size_t>(turns.front()->request)].prompt_tokens;
  }
  EXPECT_GT(mixed, 0) << "no iteration mixed decode and prefill: the test does not exercise capacity filling";
  // Each iteration is as long as its decode turns need, max(trip, stage times): prefill only fills it.
  for (const IterationRecord& it : out.iterations) EXPECT_GT(it.period_cycles, 0);
}

TEST(Serving, StaticBatchRunsWholeBatchesAndMatchesLpurtRun) {
  const Plan plan = serve_plan_for(2, 2, 1, 3);
  // Three requests at once with lpurt run's lengths: one batch, with the decode period of `lpurt run
  // --batch 3` at every step.
  std::vector<ServeRequest> requests(3);
  for (int64_t i = 0; i < 3; ++i) requests[static_cast<std::size_t>(i)] = {i, 0.0, 32, 9, {}};
  const ServeOutcome out = simulate(plan, requests, ServePolicy::static_batch);
  expect_served_exactly_once(plan, requests, out);
  for (const auto& o : out.requests) EXPECT_EQ(o.admitted_cycles, 0);
  PlanRequest batch_request;
  batch_request.n_chips = 4, batch_request.tp = 2, batch_request.pp = 2, batch_request.replicas = 1;
  batch_request.batch = 3, batch_request.context = 128, batch_request.block_tokens = 16;
  const Plan run_plan = make_plan(chip::model_preset("tiny"), {}, batch_request);
  const ModelledTimes run = modelled_times(run_plan, 32, 9);
  int64_t decode_cycles = 0, prefill_end = 0;
  for (const IterationRecord& it : out.iterations)
    if (it.decode_turns > 0) decode_cycles += it.period_cycles;
  for (const auto& o : out.requests) prefill_end = std::max(prefill_end, o.first_token_cycles);
  EXPECT_EQ(decode_cycles, run.decode_cycles);
  // The prefill as turns one after another through the pipeline, against the solved prefill program.
  EXPECT_NEAR(static_cast<double>(prefill_end), static_cast<double>(run.prefill_cycles),
              0.15 * static_cast<double>(run.prefill_cycles));

  // Later requests wait for the running batch; a batch holds at most n_slots requests, in arrival order.
  const auto more = workload(40, 1e5, "uniform:1:50", "uniform:1:30", 4);
  const ServeOutcome many = simulate(plan, more, ServePolicy::static_batch);
  expect_served_exactly_once(plan, more, many);
  std::map<int64_t, std::vector<std::size_t>> batches;  // admission time -> members
  for (std::size_t i = 0; i < more.size(); ++i)
    if (!many.requests[i].rejected) batches[many.requests[i].admitted_cycles].push_back(i);
  int64_t previous_end = 0;
  std::size_t previous_last = 0;
  for (const auto& [start, members] : batches) {
    EXPECT_LE(members.size(), 3u);
    EXPECT_GE(start, previous_end) << "a batch started while the one before it ran";
    int64_t end = 0;
    for (const std::size_t i : members) {
      end = std::max(end, many.requests[i].finished_cycles);
      EXPECT_GE(i, previous_last) << "batches out of arrival order";
    }
    previous_last = members.back();
    previous_end = end;
  }
}

TEST(Serving, DecodeWithEveryBatchSlotFullIsLpurtRunsPeriod) {
  // Decode-priority with n_slots requests of one length arriving together: once every slot decodes, each
  // iteration is lpurt run's period at that position.
  const Plan plan = serve_plan_for(1, 3, 1, 2);
  std::vector<ServeRequest> requests(2);
  for (int64_t i = 0; i < 2; ++i) requests[static_cast<std::size_t>(i)] = {i, 0.0, 4, 40, {}};
  const ServeOutcome out = simulate(plan, requests, ServePolicy::decode_priority);
  int64_t checked = 0;
  for (const IterationRecord& it : out.iterations) {
    if (it.decode_turns != 2 || it.prefill_tokens != 0) continue;
    ++checked;
    EXPECT_GE(it.period_cycles, decode_period_cycles(plan, 4));
    EXPECT_LE(it.period_cycles, decode_period_cycles(plan, 4 + 40));
  }
  EXPECT_GT(checked, 10);
}

TEST(ServeMetrics, PercentilesAreNearestRank) {
  std::vector<double> v(100);
  std::iota(v.begin(), v.end(), 1.0);
  const Percentiles p = percentiles(v);
  EXPECT_EQ(p.p50, 50);
  EXPECT_EQ(p.p90, 90);
  EXPECT_EQ(p.p99, 99);
  const Percentiles one = percentiles({7.0, std::nan("")});
  EXPECT_EQ(one.p50, 7);
  EXPECT_EQ(one.p99, 7);
  EXPECT_TRUE(std::isnan(percentiles({}).p50));
}

TEST(ServeMetrics, EnergyFollowsThePowerModel) {
  chip::ChipSpec hw;
  hw.power_active_w = 250, hw.power_idle_w = 50, hw.power_overhead_w = 10;
  const Plan plan = serve_plan_for(1, 2, 2, 2, 128, hw);
  const auto requests = workload(30, 5e4, "uniform:1:40", "uniform:1:40", 8);
  const ServeOutcome out = simulate(plan, requests, ServePolicy::decode_priority);
  ServeSlo slo;
  const ServeMetrics m = serve_metrics(plan, requests, out, slo);
  const double busy_s = static_cast<double>(out.busy_chip_cycles) / hw.clock_hz;
  EXPECT_DOUBLE_EQ(m.energy_j, 4 * 60.0 * m.makespan_s + 200.0 * busy_s);
  EXPECT_DOUBLE_EQ(m.joules_per_output_token, m.energy_j / static_cast<double>(m.output_tokens));
  EXPECT_EQ(m.completed + m.rejected, 30);
  EXPECT_EQ(m.meeting_slo, m.completed);  // no SLO: every completed request meets it
  EXPECT_GT(m.chip_utilization, 0);
  EXPECT_LT(m.chip_utilization, 1);
  // An SLO below every TTFT: nothing meets it, goodput 0, no chips-per-user figure.
  slo.ttft_s = 1e-12;
  const ServeMetrics strict = serve_metrics(plan, requests, out, slo);
  EXPECT_EQ(strict.meeting_slo, 0);
  EXPECT_EQ(strict.goodput_requests_per_s, 0);
  EXPECT_TRUE(std::isnan(strict.chips_per_user_at_slo));
  int64_t tokens = 0;
  for (std::size_t i = 0; i < requests.size(); ++i)
    if (!out.requests[i].rejected) tokens += requests[i].output_tokens;
  EXPECT_EQ(m.output_tokens, tokens);
}
