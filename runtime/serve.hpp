#pragma once
/// \file
/// One `lpurt serve`: plan the replicas and their request slots, simulate the workload through them
/// (partition/serving.hpp: pure, the same on every rank), and, in a functional run, replay every decision
/// through the chips on the MPI ranks, so that each request's tokens and logits are those of its own
/// solo `lpurt run` (each request sits in its own KV slot at its own positions, and prefill chunks of any
/// size give the bits of a whole prompt). Modelled times come from the simulation alone: a timing-only
/// run reports exactly the figures of a functional one.
///
/// Example usage:
/// \code
///   ServeConfig config;  // request, slots, requests, options, slo, outputs
///   ServeSession session(*source, hardware, config, MPI_COMM_WORLD);  // setup: throws on bad input
///   io::Record summary = session.run();                               // collective in a functional run
/// \endcode

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "chip/hardware.hpp"
#include "io/record.hpp"
#include "io/weight_source.hpp"
#include "partition/plan.hpp"
#include "partition/serve_metrics.hpp"
#include "partition/serving.hpp"
#include "partition/workload.hpp"
#include "runtime/engine.hpp"

namespace lpurt::runtime {

struct ServeConfig {
  /// Layout and sizes: tp, pp, replicas (0: as many replicas of the layout as the system holds), context
  /// (0: the longest request of the workload, in whole KV pages, at most max_seq_len), block_tokens.
  partition::PlanRequest request;
  /// Request slots per replica; 0: as many KV caches of the context as the SRAM holds, at most the slots
  /// that keep the busiest pipeline stage busy, and at most the requests per replica.
  int64_t slots = 0;
  /// Pages of kv_page_tokens in each replica's shared KV pool (partition/serving.hpp): 0: every slot's whole
  /// context, or when given slots' contexts do not fit the layout, the pool the SRAM holds; kv_pool_sram:
  /// the pool the SRAM holds after the weights and buffers (slots, unless given, then only keep the busiest
  /// stage busy); N > 0: N pages (checked against the SRAM).
  int64_t kv_pages = 0;
  static constexpr int64_t kv_pool_sram = -1;
  std::vector<partition::ServeRequest> requests;
  partition::ServeOptions options;
  partition::ServeSlo slo;
  io::Record workload;        ///< how the workload was made (fields copied into the summary)
  io::Record summary_header;  ///< fields the summary starts with (a sweep point's header)
  bool timing_only = false;
  int n_ranks = 1;
  std::string out_path;    ///< result file (rank 0; empty: none)
  std::string csv_path;    ///< per-request CSV (rank 0; empty: none)
  std::string trace_path;  ///< Perfetto trace (rank 0; empty: none)
  bool force = false;
  FaultOptions faults;  ///< step timeout of a functional run
};

/// The plan a serving run uses (see ServeConfig): unless tp and pp are given, the layout the planner picks
/// for one replica of ServeConfig::slots sequences (the shortest decode period at the full context, or with
/// a pool of kv_pages pages) when slots are given, else for one request of the workload's mean lengths;
/// replicas of it filling the system unless given; the slots; and the KV pool (Plan::shape.kv_pool_tokens,
/// 0 when every slot holds its context). Throws PlanError or CapacityError as make_plan does.
partition::Plan serve_plan(const chip::ModelConfig& model, const chip::ChipSpec& hardware, const ServeConfig& config);

class ServeSession {
 public:
  /// Setup on every rank of `comm`: plan, cost tables, simulation, and in a functional run the chips
  /// with their weights and the outputs' files. Throws on bad input; makes no collective call.
  ServeSession(io::WeightSource& source, const chip::ChipSpec& hardware, const ServeConfig& config, MPI_Comm comm);
  ~ServeSession();
  /// Replays the decisions through the chips (functional; collective), writes the outputs (rank 0) and
  /// returns the summary on every rank. `progress(done, total)` counts replayed turns.
  io::Record run(const std::function<void(int64_t, int64_t)>& progress = {});
  const partition::Plan& plan() const;
  const partition::ServeOutcome& outcome() const;
  const partition::ServeMetrics& metrics() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lpurt::runtime
