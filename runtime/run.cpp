#include "runtime/run.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>

#include "chip/kernels.hpp"
#include "io/trace.hpp"
#include "partition/timing.hpp"
#include "runtime/engine.hpp"
#include "runtime/generate.hpp"
#include "runtime/mpi.hpp"

namespace lpurt::runtime {

std::vector<int32_t> synthetic_prompt(int64_t n, int64_t vocab_size, int64_t sequence) {
  std::vector<int32_t> p(static_cast<std::size_t>(n));
  uint64_t state = 0x2545f4914f6cdd1dULL + 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(sequence);
  for (auto& t : p) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;  // xorshift64
    t = static_cast<int32_t>(state % static_cast<uint64_t>(vocab_size));
  }
  return p;
}

namespace {
int64_t sram_bytes_mean(const partition::Plan& plan) {
  int64_t total = 0;
  for (const auto& c : plan.chips) total += c.sram.total_bytes();
  return total / plan.n_chips();
}

/// The smallest speed or bandwidth factor (1 when every part is nominal).
template <typename Map>
double slowest(const Map& factors) {
  double f = 1;
  for (const auto& entry : factors) f = std::min(f, entry.second);
  return f;
}
}  // namespace

io::Record plan_summary(const partition::Plan& plan, const partition::ModelledTimes& m, int64_t prompt_tokens,
                        int64_t output_tokens) {
  const int64_t diameter = partition::topology_for(plan).diameter();
  const auto& stages = m.decode_stage_cycles;
  const int64_t busiest_stage = stages.empty() ? 0 : *std::max_element(stages.begin(), stages.end());
  const double stage_mean = stages.empty() ? 0.0
                                           : static_cast<double>(std::accumulate(stages.begin(), stages.end(), int64_t{0})) /
                                                 static_cast<double>(stages.size());
  // Every stage's span, comma-separated: a study can see where a layout is unbalanced.
  std::string stage_list_us;
  for (const int64_t cycles : stages) {
    char value[32];
    std::snprintf(value, sizeof value, "%s%.3f", stage_list_us.empty() ? "" : ",",
                  static_cast<double>(cycles) * 1e6 / plan.hardware.clock_hz);
    stage_list_us += value;
  }
  // Where each stage begins, in layer parts (chip::LayerPart: 3l attention, 3l+1 and 3l+2 the FFN's
  // halves), and the end: a study can see which stages begin inside an FFN.
  std::string stage_parts;
  for (const int64_t part : plan.stage_part_begin) stage_parts += (stage_parts.empty() ? "" : ",") + std::to_string(part);
  io::Record r;
  r.set("chips", plan.system_chips)
      .set("chips_used", plan.n_chips())
      .set("chips_idle", plan.idle_chips())
      .set("tp", plan.tp)
      .set("pp", plan.pp)
      .set("batch", plan.batch)
      .set("replicas", plan.replicas)
      .set("context", plan.shape.context)
      .set("prompt_tokens", prompt_tokens)
      .set("tokens", output_tokens)
      .set("ttft_s", m.ttft_s)
      .set("tpot_s", m.tpot_s)
      .set("tpot_compute_s", m.tpot_compute_s)
      .set("tpot_transfer_s", m.tpot_transfer_s)
      .set("tpot_idle_s", m.tpot_idle_s)
      .set("tokens_per_s_user", m.tokens_per_s_user)
      .set("tokens_per_s_system", m.tokens_per_s_system)
      .set("sram_bytes_max", plan.sram_bytes_max())
      .set("sram_bytes_mean", sram_bytes_mean(plan))
      .set("sram_bytes_per_chip", plan.hardware.sram_bytes)
      .set("network_diameter_hops", diameter)
      .set("network_worst_vector_latency_s",
           static_cast<double>(diameter) * plan.hardware.hop_latency_ns * 1e-9 +
               static_cast<double>(plan.hardware.vector_bytes) / plan.hardware.link_bytes_per_s)
      .set("max_batch", plan.max_batch())
      .set("max_context", plan.max_context())
      .set("topology", plan.hardware.topology)
      .set("slowest_chip_speed_factor", slowest(plan.hardware.chip_speed_factors))
      .set("slowest_link_bandwidth_factor", slowest(plan.hardware.link_bandwidth_factors))
      .set("decode_step_cycles", m.decode.makespan_cycles)
      .set("decode_step_transfers", m.decode.n_transfers)
      .set("decode_step_transfer_bytes", m.decode.transfer_bytes)
      .set("busiest_link", std::to_string(m.decode.busiest_link.from) + "->" + std::to_string(m.decode.busiest_link.to))
      .set("busiest_link_decode_cycles", m.decode.busiest_link_cycles)
      .set("decode_stage_busiest_s", static_cast<double>(busiest_stage) / plan.hardware.clock_hz)
      .set("decode_stage_mean_s", stage_mean / plan.hardware.clock_hz)
      .set("decode_stage_us", stage_list_us)
      .set("stage_part_begin", stage_parts);
  if (plan.model.is_moe())
    r.set("moe_routing_model",
          std::string("modelled times assume token-expert pairs spread uniformly over the experts (k x tokens / "
                      "E per held expert); functional runs route with the real router"));
  return r;
}

struct RunSession::State {
  State(io::WeightSource& source_in, const chip::ChipSpec& hardware_in, const RunConfig& config_in, MPI_Comm comm_in)
      : source(source_in), hardware(hardware_in), config(config_in), comm(comm_in),
        t0(std::chrono::steady_clock::now()),
        plan(config.plan ? *config.plan : partition::make_plan(source.config(), hardware, config.request)),
        engine(plan, source, comm, config.timing_only, config.faults), t1(std::chrono::steady_clock::now()) {}
  io::WeightSource& source;
  chip::ChipSpec hardware;
  RunConfig config;
  MPI_Comm comm;
  std::chrono::steady_clock::time_point t0;
  partition::Plan plan;
  Engine engine;
  std::chrono::steady_clock::time_point t1;
};

RunSession::RunSession(io::WeightSource& source, const chip::ChipSpec& hardware, const RunConfig& config, MPI_Comm comm)
    : state_(std::make_unique<State>(source, hardware, config, comm)) {
  // Everything the steady state would reject is rejected here, in the setup every rank agrees on.
  const partition::Plan& plan = state_->plan;
  if (config.prompts.empty() || static_cast<int64_t>(config.prompts.size()) != plan.batch)
    throw Error(std::to_string(config.prompts.size()) + " prompts for a batch of " + std::to_string(plan.batch),
                ExitCode::usage);
  validate_prompts(config.prompts, config.n_tokens, plan);
  const auto n_prompt = static_cast<int64_t>(config.prompts.front().size());
  state_->engine.prepare(n_prompt);  // the prefill's program and messages, before step 0
}

RunSession::~RunSession() = default;

io::RunResult RunSession::run(const std::function<void(int64_t, int64_t)>& progress, const LogitsSink& logits) {
  using clock = std::chrono::steady_clock;
  io::WeightSource& source = state_->source;
  const chip::ChipSpec& hardware = state_->hardware;
  const RunConfig& config = state_->config;
  const MPI_Comm comm = state_->comm;
  const partition::Plan& plan = state_->plan;
  const auto t0 = state_->t0, t1 = state_->t1;
  const LogitsSink drop = [](int64_t, int64_t, const float*) {};
  std::vector<Generation> batch =
      generate_batch(state_->engine, config.prompts, config.n_tokens, progress, logits ? logits : drop);
  const auto t2 = clock::now();
  const Generation& g = batch.front();  // host times are the batch's

  io::RunResult result;
  result.batch = static_cast<int64_t>(batch.size());
  for (std::size_t b = 0; b < batch.size(); ++b) {
    result.prompt.insert(result.prompt.end(), config.prompts[b].begin(), config.prompts[b].end());
    result.tokens.insert(result.tokens.end(), batch[b].tokens.begin(), batch[b].tokens.end());
    if (config.tokenizer && !config.timing_only) result.texts.push_back(config.tokenizer->decode(batch[b].tokens));
  }
  // Every rank computes the same modelled times; rank 0 also records them as a trace.
  const bool mpi = mpi_initialized();
  const int rank = mpi ? comm_rank(comm) : 0;
  io::TraceWriter trace(plan);
  partition::TimelineVisitor record;
  if (!config.trace_path.empty() && rank == 0)
    record = [&](const std::string& name, const std::shared_ptr<const partition::Program>& program,
                 const partition::Timeline& timeline, int64_t offset) { trace.add({name, program, timeline, offset}); };
  const partition::ModelledTimes times =
      partition::modelled_times(plan, static_cast<int64_t>(config.prompts.front().size()), config.n_tokens, record);
  if (record) trace.write(config.trace_path, config.force);
  result.summary = plan_summary(plan, times, static_cast<int64_t>(config.prompts.front().size()), config.n_tokens);
  const double wall_s = std::chrono::duration<double>(t2 - t0).count();
  result.summary.set("ranks", int64_t{config.n_ranks})
      .set("host_wall_s", wall_s)
      .set("host_setup_s", std::chrono::duration<double>(t1 - t0).count())
      .set("host_prefill_s", g.host_prefill_s)
      .set("host_decode_s", g.host_decode_s)
      .set("host_decode_step_median_s", g.host_decode_step_median_s)
      .set("host_mpi_wait_s_rank0", state_->engine.mpi_wait_s())
      .set("int8_kernels", std::string(chip::int8_kernel_name()))
      .set("weight_bytes_read_rank0", source.bytes_read())
      .set("weight_bytes_model", plan.model.weight_bytes())
      // A decode token reads every weight once, except the embedding table, of which it reads one row.
      .set("weight_bytes_per_decode_token",
           plan.model.weight_bytes() - chip::tensor_bytes(plan.model, {chip::TensorKind::embedding}) +
               plan.model.hidden_size + 4)
      .set("timing_only", int64_t{config.timing_only ? 1 : 0})
      .set("link_error_probability_per_transfer", config.faults.link_error_rate)
      .set("link_faults_detected", state_->engine.link_faults_detected())
      .set("token_replays", state_->engine.replays())
      .set("replay_time_s", static_cast<double>(state_->engine.replay_cycles()) / plan.hardware.clock_hz)
      .set("model", source.name())
      .set("system", hardware.name);

  io::MetricColumn sram{"chip_sram_bytes", "bytes", {}}, weights{"chip_weight_bytes", "bytes", {}},
      kv{"chip_kv_cache_bytes", "bytes", {}}, activations{"chip_activation_bytes", "bytes", {}},
      stage{"chip_stage", "index", {}}, compute{"chip_decode_compute_cycles", "cycles", {}},
      send{"chip_decode_send_cycles", "cycles", {}};
  for (const auto& c : plan.chips) {
    const auto i = static_cast<std::size_t>(c.chip);
    sram.values.push_back(static_cast<double>(c.sram.total_bytes()));
    weights.values.push_back(static_cast<double>(c.sram.weight_bytes));
    kv.values.push_back(static_cast<double>(c.sram.kv_cache_bytes));
    activations.values.push_back(static_cast<double>(c.sram.activation_bytes));
    stage.values.push_back(static_cast<double>(c.stage));
    compute.values.push_back(static_cast<double>(times.decode.chip_compute_cycles[i]));
    send.values.push_back(static_cast<double>(times.decode.chip_send_cycles[i]));
  }
  // Which rank hosts each chip, and what each rank actually read: a test checks that every rank read
  // exactly its own chips' weights (hyperslabs of their slices), never the whole model.
  io::MetricColumn chip_rank{"chip_rank", "index", {}}, rank_read{"rank_weight_bytes_read", "bytes", {}};
  for (const auto& c : plan.chips)
    chip_rank.values.push_back(static_cast<double>(Engine::rank_of_chip(c.chip, plan.n_chips(), config.n_ranks)));
  double read = static_cast<double>(source.bytes_read());
  // What rank 0 holds for its chips (weights, KV cache, activations), to compare with its host memory.
  int64_t rank0_bytes = 0;
  for (const auto& c : plan.chips)
    if (Engine::rank_of_chip(c.chip, plan.n_chips(), config.n_ranks) == 0)
      rank0_bytes += c.sram.weight_bytes + c.sram.kv_cache_bytes + c.sram.activation_bytes;
  result.summary.set("chip_state_bytes_rank0", config.timing_only ? int64_t{0} : rank0_bytes);
  rank_read.values.assign(static_cast<std::size_t>(config.n_ranks), read);
  // Time each rank waited for messages: a rank on a slower core makes the others wait for it.
  double wait_s = state_->engine.mpi_wait_s();
  io::MetricColumn rank_wait{"rank_mpi_wait_s", "s", std::vector<double>(static_cast<std::size_t>(config.n_ranks), wait_s)};
  if (mpi && config.n_ranks > 1) {
    LPURT_MPI_CHECK(MPI_Allgather(&read, 1, MPI_DOUBLE, rank_read.values.data(), 1, MPI_DOUBLE, comm));
    LPURT_MPI_CHECK(MPI_Allgather(&wait_s, 1, MPI_DOUBLE, rank_wait.values.data(), 1, MPI_DOUBLE, comm));
  }
  result.summary.set("host_mpi_wait_s_max", *std::max_element(rank_wait.values.begin(), rank_wait.values.end()));
  // Every rank's CPU time over the decode, summed: over the wall time, the cores the ranks kept busy.
  double decode_cpu_s = g.host_decode_cpu_s;
  if (mpi && config.n_ranks > 1)
    LPURT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &decode_cpu_s, 1, MPI_DOUBLE, MPI_SUM, comm));
  result.summary.set("host_decode_cpu_s", decode_cpu_s);
  result.metrics = {sram, weights, kv, activations, stage, compute, send, chip_rank, rank_read, rank_wait};
  return result;
}

void agree_on_setup(MPI_Comm comm, const std::function<void()>& setup) {
  std::string message;
  auto code = ExitCode::success;
  try {
    setup();
  } catch (const Error& e) {
    message = e.what(), code = e.code();
  } catch (const std::bad_alloc&) {
    message = "out of host memory during setup", code = ExitCode::runtime;
  }
  agree_on_error(comm, message, code);
}

void agree_on_error(MPI_Comm comm, std::string message, ExitCode code) {
  const bool mpi = mpi_initialized();
  const int rank = mpi ? comm_rank(comm) : 0, n_ranks = mpi ? comm_size(comm) : 1;
  const bool failed = code != ExitCode::success;
  int first = failed ? rank : n_ranks;
  if (n_ranks > 1) LPURT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == n_ranks) return;
  // The first failing rank's message and code go to every rank.
  int header[2] = {static_cast<int>(code), static_cast<int>(message.size())};
  if (n_ranks > 1) LPURT_MPI_CHECK(MPI_Bcast(header, 2, MPI_INT, first, comm));
  message.resize(static_cast<std::size_t>(header[1]));
  if (n_ranks > 1 && header[1] > 0) LPURT_MPI_CHECK(MPI_Bcast(message.data(), header[1], MPI_CHAR, first, comm));
  throw AgreedError(message, static_cast<ExitCode>(header[0]), first);
}

}  // namespace lpurt::runtime
