#include "runtime/run.hpp"

#include <chrono>

#include "io/trace.hpp"
#include "partition/timing.hpp"
#include "runtime/engine.hpp"
#include "runtime/generate.hpp"

namespace lpurt::runtime {

std::vector<int32_t> synthetic_prompt(int64_t n, int64_t vocab_size) {
  std::vector<int32_t> p(static_cast<std::size_t>(n));
  uint64_t state = 0x2545f4914f6cdd1dULL;
  for (auto& t : p) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;  // xorshift64
    t = static_cast<int32_t>(state % static_cast<uint64_t>(vocab_size));
  }
  return p;
}

io::Record plan_summary(const partition::Plan& plan, const partition::ModelledTimes& m, int64_t prompt_tokens,
                        int64_t output_tokens) {
  io::Record r;
  r.set("chips", plan.n_chips())
      .set("tp", plan.tp)
      .set("pp", plan.pp)
      .set("batch", plan.shape.n_slots)
      .set("context", plan.shape.context)
      .set("prompt_tokens", prompt_tokens)
      .set("tokens", output_tokens)
      .set("ttft_s", m.ttft_s)
      .set("tpot_s", m.tpot_s)
      .set("tokens_per_s_user", m.tokens_per_s_user)
      .set("tokens_per_s_system", m.tokens_per_s_system)
      .set("sram_bytes_max", plan.sram_bytes_max())
      .set("sram_bytes_per_chip", plan.hardware.sram_bytes)
      .set("topology", plan.hardware.topology);
  return r;
}

io::RunResult execute_run(io::WeightSource& source, const chip::ChipSpec& hardware, const RunConfig& config,
                          MPI_Comm comm, const std::function<void(int64_t, int64_t)>& progress) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const partition::Plan plan = partition::make_plan(source.config(), hardware, config.request);
  Engine engine(plan, source, comm);
  const auto t1 = clock::now();
  Generation g = generate(engine, config.prompt, config.n_tokens, 0, progress);
  const auto t2 = clock::now();

  io::RunResult result;
  result.prompt = config.prompt;
  result.tokens = std::move(g.tokens);
  result.logits = std::move(g.logits);
  result.vocab_size = plan.model.vocab_size;
  // Every rank computes the same modelled times; rank 0 also records them as a trace.
  int rank = 0, mpi_initialized = 0;
  MPI_Initialized(&mpi_initialized);
  if (mpi_initialized) MPI_Comm_rank(comm, &rank);
  io::TraceWriter trace(plan);
  partition::TimelineVisitor record;
  if (!config.trace_path.empty() && rank == 0)
    record = [&](const std::string& name, const std::shared_ptr<const partition::Program>& program,
                 const partition::Timeline& timeline, int64_t offset) { trace.add({name, program, timeline, offset}); };
  const partition::ModelledTimes times =
      partition::modelled_times(plan, static_cast<int64_t>(config.prompt.size()), config.n_tokens, record);
  if (record) trace.write(config.trace_path, config.force);
  result.summary = plan_summary(plan, times, static_cast<int64_t>(config.prompt.size()), config.n_tokens);
  const double wall_s = std::chrono::duration<double>(t2 - t0).count();
  result.summary.set("ranks", int64_t{config.n_ranks})
      .set("host_wall_s", wall_s)
      .set("host_setup_s", std::chrono::duration<double>(t1 - t0).count())
      .set("host_prefill_s", g.host_prefill_s)
      .set("host_decode_s", g.host_decode_s)
      .set("weight_bytes_read_rank0", source.bytes_read())
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
  result.metrics = {sram, weights, kv, activations, stage, compute, send};
  result.summary.set("decode_step_transfers", times.decode.n_transfers)
      .set("decode_step_transfer_bytes", times.decode.transfer_bytes)
      .set("busiest_link", std::to_string(times.decode.busiest_link.from) + "->" +
                               std::to_string(times.decode.busiest_link.to))
      .set("busiest_link_decode_cycles", times.decode.busiest_link_cycles);
  return result;
}

}  // namespace lpurt::runtime
