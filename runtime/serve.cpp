#include "runtime/serve.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "chip/kernels.hpp"
#include "io/serve_output.hpp"
#include "io/table.hpp"
#include "partition/request.hpp"
#include "partition/schedule.hpp"
#include "partition/timing.hpp"
#include "runtime/mpi.hpp"
#include "runtime/run.hpp"

namespace lpurt::runtime {

namespace {

using clock_type = std::chrono::steady_clock;

/// Slices of turns through stages a trace holds at most (each a JSON event of about 150 bytes).
constexpr int64_t trace_stage_slices = 500'000;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// The KV context of a slot: the given one, else the longest request in whole pages (at most the model's).
int64_t serve_context(const chip::ModelConfig& model, const ServeConfig& config) {
  if (config.request.context > 0) return config.request.context;
  int64_t longest = 1;
  for (const auto& r : config.requests) longest = std::max(longest, partition::kv_positions(r));
  const int64_t page = std::max<int64_t>(1, config.options.kv_page_tokens);
  const int64_t in_pages = longest > model.max_seq_len ? model.max_seq_len : (longest + page - 1) / page * page;
  return std::min(in_pages, model.max_seq_len);
}

}  // namespace

partition::Plan serve_plan(const chip::ModelConfig& model, const chip::ChipSpec& hardware, const ServeConfig& config) {
  partition::PlanRequest r = config.request;
  r.context = serve_context(model, config);
  if (config.slots < 0)
    throw Error("--slots must be at least 1 (got " + std::to_string(config.slots) + ")", ExitCode::usage);
  const int64_t page = std::max<int64_t>(1, config.options.kv_page_tokens);
  if (config.kv_pages < ServeConfig::kv_pool_sram || config.kv_pages > (int64_t{1} << 40) / page)
    throw Error("--kv-pages must be 1 .. " + std::to_string((int64_t{1} << 40) / page) + " or sram (got " +
                    std::to_string(config.kv_pages) + ")",
                ExitCode::usage);
  if (config.kv_pages > 0) r.kv_pool_tokens = config.kv_pages * page;
  if (r.tp == 0 || r.pp == 0) {
    partition::PlanRequest one = r;
    one.replicas = 1;
    if (config.slots > 0) {
      // One replica with room for the slots' KV caches and the shortest decode period with every slot
      // decoding (each user's time per output token). Prompts are left out of the objective: with them the
      // planner models a whole batch's prefill for each candidate layout (llama2-70b, 31 slots on 576
      // chips: 44 s and 2.3 GB instead of 0.3 s, for the same layout), and decode-priority serving fits
      // prefill into the decode turns' spare stage time anyway.
      one.batch = config.slots;
      one.prompt_tokens = one.output_tokens = 0;
    } else {
      // The layout of one request of the workload's mean lengths (that fit), as `lpurt plan` would pick it.
      double prompt = 0, output = 0;
      int64_t n = 0;
      for (const auto& q : config.requests)
        if (partition::kv_positions(q) <= r.context)
          prompt += static_cast<double>(q.prompt_tokens), output += static_cast<double>(q.output_tokens), ++n;
      one.batch = 1;
      one.prompt_tokens = n > 0 ? std::max<int64_t>(1, std::llround(prompt / static_cast<double>(n))) : 0;
      one.output_tokens = n > 0 ? std::max<int64_t>(1, std::llround(output / static_cast<double>(n))) : 0;
      if (one.prompt_tokens + one.output_tokens - 1 > r.context) one.prompt_tokens = one.output_tokens = 0;
    }
    try {
      const partition::Plan layout = partition::make_plan(model, hardware, one);
      r.tp = layout.tp;
      r.pp = layout.pp;
    } catch (const chip::CapacityError& e) {
      if (config.slots == 0 && config.kv_pages <= 0) throw;
      const std::string what = config.slots > 0 ? "--slots " + std::to_string(config.slots)
                                                : "--kv-pages " + std::to_string(config.kv_pages);
      throw chip::CapacityError(what + ": " + e.what());
    }
  }
  if (r.replicas == 0) r.replicas = std::max<int64_t>(1, r.n_chips / (r.tp * r.pp));
  int64_t slots = config.slots;
  if (slots == 0) {
    // As many KV caches as the SRAM holds, but no more than keep the busiest stage busy (a token's trip over
    // the busiest stage's time per token: more slots only lengthen every user's wait), nor than requests
    // per replica.
    partition::PlanRequest probe_request = r;
    probe_request.batch = r.replicas;
    const partition::Plan probe = partition::make_plan(model, hardware, probe_request);
    const partition::Program decode =
        partition::build_program(probe, partition::topology_for(probe), partition::decode_blocks());
    const partition::DecodePace pace =
        partition::decode_pace(probe, decode, partition::compute_timeline(decode, probe, r.context - 1));
    const int64_t saturating =
        (pace.latency_cycles + pace.busiest_stage_cycles - 1) / std::max<int64_t>(1, pace.busiest_stage_cycles);
    const auto n_requests = static_cast<int64_t>(config.requests.size());
    // With a pool asked for, the pool, not the slots' contexts, bounds the KV.
    const int64_t held = config.kv_pages != 0 ? saturating : probe.max_batch() / r.replicas;
    slots = std::max<int64_t>(1, std::min({held, saturating, (n_requests + r.replicas - 1) / r.replicas}));
  }
  if (slots > (int64_t{1} << 20) / r.replicas)
    throw chip::CapacityError("--slots " + std::to_string(slots) + " x " + std::to_string(r.replicas) +
                              " replicas is more sequences than any system holds");
  r.batch = r.replicas * slots;
  if (config.kv_pages == ServeConfig::kv_pool_sram || (config.kv_pages == 0 && config.slots > 0)) {
    // The pool the SRAM holds with this layout, in whole pages: taken when asked for, or when the given
    // slots' whole contexts would not fit (the slots then share it).
    partition::PlanRequest smallest = r;
    smallest.kv_pool_tokens = page;
    const int64_t pool = partition::make_plan(model, hardware, smallest).max_kv_tokens() / page * page;
    if (config.kv_pages == ServeConfig::kv_pool_sram || pool < slots * r.context) r.kv_pool_tokens = pool;
  }
  try {
    return partition::make_plan(model, hardware, r);
  } catch (const chip::CapacityError& e) {
    if (config.kv_pages <= 0) throw;
    throw chip::CapacityError("--kv-pages " + std::to_string(config.kv_pages) + ": " + e.what());
  }
}

struct ServeSession::State {
  State(io::WeightSource& source_in, const chip::ChipSpec& hardware_in, const ServeConfig& config_in, MPI_Comm comm_in)
      : source(source_in),
        hardware(hardware_in),
        config(config_in),
        comm(comm_in),
        t0(clock_type::now()),
        plan(serve_plan(source.config(), hardware, config)) {}
  io::WeightSource& source;
  chip::ChipSpec hardware;
  ServeConfig config;
  MPI_Comm comm;
  clock_type::time_point t0;
  partition::Plan plan;
  std::unique_ptr<partition::ServeCosts> costs;
  partition::ServeOutcome outcome;
  partition::ServeMetrics metrics;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<io::ServeResultWriter> result_file;  ///< rank 0
  std::vector<int64_t> logits_row;                     ///< [requests] first logits row of each request
  int rank = 0;
  double costs_s = 0, simulate_s = 0, setup_s = 0;
};

ServeSession::ServeSession(io::WeightSource& source, const chip::ChipSpec& hardware, const ServeConfig& config,
                           MPI_Comm comm)
    : state_(std::make_unique<State>(source, hardware, config, comm)) {
  State& s = *state_;
  s.rank = mpi_initialized() ? comm_rank(comm) : 0;
  const partition::Plan& plan = s.plan;
  const bool functional = !config.timing_only;
  if (functional) {
    // Every prompt a functional run feeds must be in the vocabulary (a trace's prompt column).
    for (const auto& r : config.requests)
      for (std::size_t i = 0; i < r.prompt.size(); ++i)
        if (r.prompt[i] < 0 || r.prompt[i] >= plan.model.vocab_size)
          throw partition::WorkloadError(
              "request " + std::to_string(r.id) + ": prompt token " + std::to_string(r.prompt[i]) + " (position " +
                  std::to_string(i) + ") is outside the vocabulary [0, " + std::to_string(plan.model.vocab_size) + ")",
              ExitCode::usage);
  }
  auto t = clock_type::now();
  s.costs = std::make_unique<partition::ServeCosts>(plan, config.requests);
  s.costs_s = seconds_since(t);
  t = clock_type::now();
  partition::ServeOptions options = config.options;
  options.record_turns = functional;
  // A trace shows the first turns moving through the stages: pp slices each, up to trace_stage_slices.
  if (!config.trace_path.empty()) options.max_turn_records = trace_stage_slices / plan.pp;
  s.outcome = partition::simulate_serving(plan, *s.costs, config.requests, options);
  s.metrics = partition::serve_metrics(plan, config.requests, s.outcome, config.slo);
  s.simulate_s = seconds_since(t);
  int64_t rows = 0;
  s.logits_row.resize(config.requests.size());
  for (std::size_t i = 0; i < config.requests.size(); ++i) {
    s.logits_row[i] = rows;
    if (!s.outcome.requests[i].rejected) rows += config.requests[i].output_tokens;
  }
  if (functional) {
    s.engine = std::make_unique<Engine>(plan, source, comm, false, config.faults);
    for (const int64_t shape : s.costs->chunk_shapes())
      if (std::any_of(s.outcome.turns.begin(), s.outcome.turns.end(),
                      [&](const partition::Turn& turn) { return turn.n_tokens == shape; }))
        s.engine->prepare(shape);
  }
  if (s.rank == 0 && !config.out_path.empty())
    s.result_file = std::make_unique<io::ServeResultWriter>(config.out_path, config.force, functional ? rows : 0,
                                                            plan.model.vocab_size);
  s.setup_s = seconds_since(s.t0);
}

ServeSession::~ServeSession() = default;

const partition::Plan& ServeSession::plan() const { return state_->plan; }
const partition::ServeOutcome& ServeSession::outcome() const { return state_->outcome; }
const partition::ServeMetrics& ServeSession::metrics() const { return state_->metrics; }

namespace {

io::TableColumn integer_column(const std::string& name, const std::string& unit, std::vector<int64_t> values) {
  io::TableColumn c;
  c.name = name, c.unit = unit, c.kind = io::TableColumn::Kind::integer, c.integers = std::move(values);
  return c;
}
io::TableColumn real_column(const std::string& name, const std::string& unit, std::vector<double> values) {
  io::TableColumn c;
  c.name = name, c.unit = unit, c.kind = io::TableColumn::Kind::real, c.reals = std::move(values);
  return c;
}

}  // namespace

io::Record ServeSession::run(const std::function<void(int64_t, int64_t)>& progress) {
  State& s = *state_;
  const ServeConfig& config = s.config;
  const partition::Plan& plan = s.plan;
  const auto& requests = config.requests;
  const auto t_replay = clock_type::now();
  std::vector<std::vector<int32_t>> generated;
  if (s.engine) {
    // Replay: every turn in the simulation's order, each request in its slot of the moment at its own
    // positions (the host keeps every slot's whole context; a preempted request's new prefill rewrites its
    // KV in its new slot from position 0).
    const int64_t vocab = plan.model.vocab_size;
    generated.resize(requests.size());
    // [requests][prompt + output tokens] the prompt, then the tokens generated so far (a recompute chunk
    // reads across the two)
    std::vector<std::vector<int32_t>> sequences(requests.size());
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (s.outcome.requests[i].rejected) continue;
      generated[i].reserve(static_cast<std::size_t>(requests[i].output_tokens));
      sequences[i] = requests[i].prompt.empty()
                         ? synthetic_prompt(requests[i].prompt_tokens, vocab, requests[i].id)
                         : requests[i].prompt;
      sequences[i].reserve(static_cast<std::size_t>(requests[i].prompt_tokens + requests[i].output_tokens));
    }
    std::vector<float> row(static_cast<std::size_t>(vocab));  // [vocab] logits of the turn's last token
    const auto n_turns = static_cast<int64_t>(s.outcome.turns.size());
    for (int64_t k = 0; k < n_turns; ++k) {
      const partition::Turn& turn = s.outcome.turns[static_cast<std::size_t>(k)];
      const auto i = static_cast<std::size_t>(turn.request);
      const int64_t sequence = turn.slot * plan.replicas + turn.replica;
      LPURT_ASSERT(turn.position + turn.n_tokens <= static_cast<int64_t>(sequences[i].size()));
      s.engine->forward(sequence, sequences[i].data() + turn.position, turn.position, turn.n_tokens,
                        turn.emits_token ? row.data() : nullptr);
      if (turn.emits_token) {
        generated[i].push_back(static_cast<int32_t>(chip::argmax(row.data(), vocab)));
        sequences[i].push_back(generated[i].back());
        if (s.result_file)
          s.result_file->write_logits(s.logits_row[i] + static_cast<int64_t>(generated[i].size()) - 1, row.data());
      }
      if (progress && (k + 1 == n_turns || (k + 1) % 256 == 0)) progress(k + 1, n_turns);
    }
    for (std::size_t i = 0; i < requests.size(); ++i)
      LPURT_ASSERT(s.outcome.requests[i].rejected ||
                   static_cast<int64_t>(generated[i].size()) == requests[i].output_tokens);
  }
  const double replay_s = seconds_since(t_replay);

  const partition::ServeMetrics& m = s.metrics;
  const partition::ServeOutcome& o = s.outcome;
  io::Record r = config.summary_header;
  r.set("requests", m.n_requests)
      .set("completed", m.completed)
      .set("rejected", m.rejected)
      .set("makespan_s", m.makespan_s)
      .set("ttft_p50_s", m.ttft_s.p50)
      .set("ttft_p90_s", m.ttft_s.p90)
      .set("ttft_p99_s", m.ttft_s.p99)
      .set("tpot_p50_s", m.tpot_s.p50)
      .set("tpot_p90_s", m.tpot_s.p90)
      .set("tpot_p99_s", m.tpot_s.p99)
      .set("e2e_p50_s", m.e2e_s.p50)
      .set("e2e_p90_s", m.e2e_s.p90)
      .set("e2e_p99_s", m.e2e_s.p99)
      .set("queue_p50_s", m.queue_s.p50)
      .set("queue_p99_s", m.queue_s.p99)
      .set("output_tokens", m.output_tokens)
      .set("output_tokens_per_s", m.output_tokens_per_s)
      .set("requests_per_s", m.requests_per_s)
      .set("goodput_requests_per_s", m.goodput_requests_per_s)
      .set("meeting_slo", m.meeting_slo)
      .set("slo_ttft_s", config.slo.ttft_s)
      .set("slo_tpot_s", config.slo.tpot_s)
      .set("joules_per_output_token", m.joules_per_output_token)
      .set("output_tokens_per_kwh", m.output_tokens_per_kwh)
      .set("energy_j", m.energy_j)
      .set("mean_power_w", m.mean_power_w)
      .set("chip_utilization", m.chip_utilization)
      .set("users_at_slo", m.users_at_slo)
      .set("chips_per_user_at_slo", m.chips_per_user_at_slo)
      .set("power_active_w", plan.hardware.power_active_w)
      .set("power_idle_w", plan.hardware.power_idle_w)
      .set("power_overhead_w", plan.hardware.power_overhead_w)
      .set("policy", std::string(partition::policy_name(config.options.policy)))
      .set("router", std::string(partition::router_name(config.options.router)))
      .set("slots", plan.shape.n_slots)
      .set("replicas", plan.replicas)
      .set("chips", plan.system_chips)
      .set("chips_used", plan.n_chips())
      .set("tp", plan.tp)
      .set("pp", plan.pp)
      .set("context", plan.shape.context)
      .set("block_tokens", plan.shape.block_tokens)
      .set("kv_page_tokens", config.options.kv_page_tokens)
      .set("kv_pages_per_replica", o.kv_pages_per_replica)
      .set("kv_page_bytes", o.kv_page_bytes)
      .set("kv_pages_in_use_max", o.max_kv_pages_in_use)
      .set("kv_pool_shared", int64_t{plan.shape.kv_pool_tokens > 0 ? 1 : 0})
      .set("preemptions", o.preemptions)
      .set("sram_bytes_max", plan.sram_bytes_max())
      .set("iterations", o.n_iterations)
      .set("turns", o.n_turns)
      .set("cost_programs_modelled", s.costs->programs_modelled());
  for (const auto& [key, value] : config.workload.fields()) r.set(key, value);
  r.set("timing_only", int64_t{config.timing_only ? 1 : 0})
      .set("ranks", int64_t{config.n_ranks})
      .set("model", s.source.name())
      .set("system", s.hardware.name)
      .set("host_setup_s", s.setup_s)
      .set("host_costs_s", s.costs_s)
      .set("host_simulate_s", s.simulate_s)
      .set("host_replay_s", replay_s)
      .set("host_wall_s", seconds_since(s.t0));

  if (s.rank != 0) return r;
  const auto n = requests.size();
  std::vector<int64_t> id(n), prefill(n), decode(n), replica(n), slot(n), rejected(n), meets(n), preempted(n);
  std::vector<double> arrived(n), admitted(n), first(n), finished(n), ttft(n), tpot(n), e2e(n);
  for (std::size_t i = 0; i < n; ++i) {
    const partition::RequestFigures& f = m.requests[i];
    id[i] = requests[i].id, prefill[i] = requests[i].prompt_tokens, decode[i] = requests[i].output_tokens;
    replica[i] = o.requests[i].rejected ? -1 : o.requests[i].replica, slot[i] = o.requests[i].slot;
    rejected[i] = o.requests[i].rejected ? 1 : 0, meets[i] = f.meets_slo ? 1 : 0;
    preempted[i] = o.requests[i].preemptions;
    arrived[i] = f.arrived_s, admitted[i] = f.admitted_s, first[i] = f.first_token_s, finished[i] = f.finished_s;
    ttft[i] = f.ttft_s, tpot[i] = f.tpot_s, e2e[i] = f.e2e_s;
  }
  const std::vector<io::TableColumn> columns = {integer_column("id", "", id),
                                                real_column("arrived_at", "s", arrived),
                                                real_column("first_token_at", "s", first),
                                                real_column("finished_at", "s", finished),
                                                integer_column("num_prefill_tokens", "tokens", prefill),
                                                integer_column("num_decode_tokens", "tokens", decode),
                                                integer_column("replica", "", replica),
                                                integer_column("slot", "", slot),
                                                real_column("admitted_at", "s", admitted),
                                                real_column("ttft_s", "s", ttft),
                                                real_column("tpot_s", "s", tpot),
                                                real_column("e2e_s", "s", e2e),
                                                integer_column("rejected", "", rejected),
                                                integer_column("meets_slo", "", meets),
                                                integer_column("preemptions", "", preempted)};
  if (!config.csv_path.empty()) io::write_table_csv(config.csv_path, columns, config.force);
  if (s.result_file) {
    std::vector<double> time_s;
    std::vector<int64_t> queued, active, pages, kv_bytes;
    for (const partition::ServeSample& sample : o.samples) {
      time_s.push_back(static_cast<double>(sample.cycles) / plan.hardware.clock_hz);
      queued.push_back(sample.queued);
      active.push_back(sample.active);
      pages.push_back(sample.kv_pages);
      kv_bytes.push_back(sample.kv_pages * o.kv_page_bytes);
    }
    const std::vector<io::TableColumn> timeline = {
        real_column("time_s", "s", time_s), integer_column("queued", "", queued), integer_column("active", "", active),
        integer_column("kv_pages", "", pages), integer_column("kv_bytes", "bytes", kv_bytes)};
    s.result_file->commit(r, columns, generated, s.logits_row, timeline);
  }
  if (!config.trace_path.empty())
    io::write_serve_trace(config.trace_path, config.force, o,
                          partition::stage_slices(plan, o, trace_stage_slices / plan.pp), plan.replicas,
                          plan.shape.n_slots, plan.pp, plan.hardware.clock_hz);
  return r;
}

}  // namespace lpurt::runtime
