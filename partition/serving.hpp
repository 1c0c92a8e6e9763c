#pragma once
/// \file
/// Serving requests through the static pipeline: a discrete-event simulation, pure and deterministic (no
/// MPI, no host clock), of how the replicas of a plan take a stream of requests. Every rank computes the
/// same decisions; a functional run replays them through the chips (runtime/serve.hpp).
///
/// The model (lpu-v1-facts §2.4, SHIP): each replica is a static pipeline with B request slots (the
/// plan's n_slots), each slot holding one request's KV cache (its context, in pages of kv_page_tokens).
/// The pipeline works in iterations: in one iteration each slot may send one pass (a "turn") into the
/// pipeline, a decode token or a prefill chunk. Turns enter the first stage one after another; an
/// iteration lasts
///     max(the longest decode turn's trip through the pipeline, the sum of the turns' busiest-stage times)
/// (a user's next token needs its previous one back; the busiest stage takes the turns one at a time),
/// which with every slot decoding at one position is `lpurt run`'s period max(latency, B x stage). A
/// turn's output leaves at its entry (the iteration's start plus the busiest-stage times of the turns
/// before it) plus its trip. Prefill chunks are compiled shapes: block_tokens and the powers of two
/// below it. Costs come from a table built once from the plan (ServeCosts), exact per position.
///
/// Policies (each has a name, so a study can compare them):
/// - `decode-priority` (SHIP): at each iteration, free slots admit waiting requests in arrival order;
///   every decoding slot whose previous token is back decodes one token; prefill chunks of the admitted
///   requests, in admission order, fill the capacity the decode turns leave of the iteration, the capacity
///   being the period of all B slots decoding, max(the longest decode trip, B x the widest decode stage
///   time): the largest chunk shape whose busiest-stage time fits, down to 1 token, and at least one
///   prefill token per iteration so that prefill never starves. With no decode turn there is nothing to
///   protect: each prefilling request gets one chunk of the largest shape.
/// - `static-batch` (what `lpurt run` does): when a replica is idle, it takes up to B waiting requests as
///   one batch; every member's prompt is prefilled (chunks of block_tokens, one after another), then
///   decode rounds give every unfinished member a token per round at the period of B slots (finished
///   slots stay bubbles of the static schedule), until the last member finishes. Requests arriving
///   meanwhile wait for the next batch.
/// Routers: `round-robin` (request i of the arrival order to replica i mod R) and `least-loaded` (to the
/// replica with the fewest waiting and admitted requests at its arrival; ties to the lowest index).
///
/// KV pages (lpu-v1-facts §2.4, §4): a replica's KV SRAM is one pool of pages of kv_page_tokens positions
/// that its slots share: the plan's pool (Plan::shape.kv_pool_tokens), else every slot's whole context.
/// A request needs prompt + output - 1 KV positions; one longer than the plan's context or the pool can
/// never run and is rejected (counted). Pages are allocated as positions are written and given back when
/// the request finishes. decode-priority admits the head of the queue when a slot is free and the pool
/// holds its prefill's pages beyond those promised to the requests still prefilling; when a turn needs a
/// page and the pool is empty, the most recently admitted unfinished request of the replica is preempted
/// (vLLM's recompute: it gives back its slot and pages and goes to the front of the queue; admitted
/// again, it prefills its prompt and the tokens it had generated, the same KV, once its last token is
/// back, and goes on). static-batch reserves each member's whole KV when the batch forms and never
/// preempts. With every slot's context in the pool nothing is ever preempted.
///
/// Example usage:
/// \code
///   ServeCosts costs(plan, requests);
///   ServeOutcome out = simulate_serving(plan, costs, requests, {});
/// \endcode

#include <cstdint>
#include <string>
#include <vector>

#include "partition/plan.hpp"
#include "partition/timing.hpp"
#include "partition/workload.hpp"

namespace lpurt::partition {

enum class ServePolicy { decode_priority, static_batch };
enum class ServeRouter { round_robin, least_loaded };
/// Names as the command line spells them ("decode-priority", "static-batch"; "round-robin", "least-loaded").
const char* policy_name(ServePolicy p);
const char* router_name(ServeRouter r);
/// Throws WorkloadError (usage) naming the known names.
ServePolicy parse_policy(const std::string& name);
ServeRouter parse_router(const std::string& name);
const std::vector<std::string>& policy_names();

struct ServeOptions {
  ServePolicy policy = ServePolicy::decode_priority;
  ServeRouter router = ServeRouter::round_robin;
  int64_t kv_page_tokens = 256;             ///< SHIP pages the KV cache in 128-512 tokens (lpu-v1-facts §4)
  bool record_turns = false;                ///< keep every turn (a functional run replays them)
  int64_t max_iteration_records = 200'000;  ///< iterations kept for the trace; later ones are counted only
  int64_t max_turn_records = 0;             ///< without record_turns, the first turns kept (for the trace)
};

/// The costs of every turn a serving simulation can take on a plan, built once (exact, by position).
class ServeCosts {
 public:
  /// Tables for the positions `requests` can reach (those that fit the plan's context), per replica when
  /// chips or links differ, else one for all.
  ServeCosts(const Plan& plan, const std::vector<ServeRequest>& requests);
  /// The prefill chunk shapes, largest first: block_tokens, then the powers of two below it.
  const std::vector<int64_t>& chunk_shapes() const { return shapes_; }
  /// A decode turn at `position` (the token fed sits there).
  const BlockCost& decode(int64_t replica, int64_t position) const;
  /// A prefill chunk of chunk_shapes()[shape] tokens at positions [position, position + shape).
  const BlockCost& chunk(int64_t replica, std::size_t shape, int64_t position) const;
  /// Timelines solved to build the tables (interpolation solves few).
  int64_t programs_modelled() const { return programs_modelled_; }

 private:
  struct Table {
    std::vector<BlockCost> decode;               ///< [positions]
    std::vector<std::vector<BlockCost>> chunks;  ///< [shapes][start positions]
  };
  const Table& table(int64_t replica) const { return tables_[uniform_ ? 0 : static_cast<std::size_t>(replica)]; }
  std::vector<int64_t> shapes_;
  std::vector<Table> tables_;
  bool uniform_ = true;
  int64_t programs_modelled_ = 0;
};

/// What happened to one request (cycles of the modelled system from the workload's start; -1: never).
struct RequestOutcome {
  int64_t arrived_cycles = 0;
  int64_t replica = -1;
  int64_t slot = -1;
  int64_t admitted_cycles = -1;  ///< given a slot (the first time)
  int64_t resumed_cycles = -1;   ///< given the slot it finished in (admitted_cycles unless preempted)
  int64_t first_token_cycles = -1;
  int64_t finished_cycles = -1;  ///< its last token out
  bool rejected = false;         ///< longer than a slot's context or the KV pool: never admitted
  int64_t preemptions = 0;       ///< times it gave back its slot and pages (recompute)
};

/// One pass through a replica's pipeline, in the order the simulation decided them.
struct Turn {
  int64_t request = 0;
  int64_t replica = 0;
  int64_t slot = 0;
  int64_t position = 0;       ///< first position of the tokens fed
  int64_t n_tokens = 1;       ///< 1 for a decode turn
  bool emits_token = false;   ///< its logits give the request's next token (decode, or a prompt's last chunk)
  int64_t iteration = 0;      ///< the iteration it belongs to (ServeOutcome::n_iterations counts them)
  int64_t entry_cycles = 0;   ///< when it enters the pipeline's first stage
  int64_t output_cycles = 0;  ///< when its output leaves the last stage
};

/// A change of the system-wide counters at a moment: requests waiting, requests admitted, KV pages in use.
struct ServeSample {
  int64_t cycles = 0;
  int64_t queued = 0;
  int64_t active = 0;
  int64_t kv_pages = 0;
};

/// One iteration of one replica, for the trace (a static batch records each member's prefill and each
/// decode round as one).
struct IterationRecord {
  int64_t replica = 0;
  int64_t start_cycles = 0;
  int64_t period_cycles = 0;
  int64_t decode_turns = 0;
  int64_t prefill_tokens = 0;
};

struct ServeOutcome {
  std::vector<RequestOutcome> requests;     ///< [requests] in workload order
  std::vector<Turn> turns;                  ///< with ServeOptions::record_turns
  std::vector<ServeSample> samples;         ///< the counters after each change, in time order
  std::vector<IterationRecord> iterations;  ///< the first max_iteration_records
  int64_t n_iterations = 0;
  int64_t n_turns = 0;
  int64_t busy_chip_cycles = 0;      ///< compute cycles of every turn, summed over chips
  int64_t kv_pages_per_replica = 0;  ///< the KV pool in pages (the plan's pool, else n_slots x pages of a context)
  int64_t kv_page_bytes = 0;         ///< SRAM of one page, summed over a replica's chips
  int64_t max_kv_pages_in_use = 0;   ///< the most pages any replica held at once
  int64_t preemptions = 0;           ///< requests sent back to the queue for want of a page
};

/// Simulates `requests` (any order of arrival; ties by id) on `plan`'s replicas. Deterministic: the same
/// inputs give the same outcome on every rank and every run. Throws WorkloadError (usage) for a page size
/// below 1.
ServeOutcome simulate_serving(const Plan& plan, const ServeCosts& costs, const std::vector<ServeRequest>& requests,
                              const ServeOptions& options);

/// One turn's pass through one stage of its replica's pipeline (the trace shows requests moving through
/// the stages).
struct StageSlice {
  int64_t turn = 0;  ///< index into ServeOutcome::turns
  int64_t stage = 0;
  int64_t start_cycles = 0;
  int64_t end_cycles = 0;
};

/// The passes of the first `max_turns` of outcome.turns through their stages, in turn order and stage by
/// stage: from the exact schedule of the turn's program at its position (timing.hpp block_stage_spans: each
/// stage's first compute op's start to its last one's end, after the turn's entry). A stage serves one
/// turn at a time: a turn that would reach a stage still busy with the turn ahead (a short turn catching
/// up with a long one) waits, and so do its later stages; the simulation's iteration model does not.
std::vector<StageSlice> stage_slices(const Plan& plan, const ServeOutcome& outcome, int64_t max_turns);

/// KV positions a request needs: its prompt and every generated token but the last.
inline int64_t kv_positions(const ServeRequest& r) { return r.prompt_tokens + r.output_tokens - 1; }

}  // namespace lpurt::partition
