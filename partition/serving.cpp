#include "partition/serving.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <numeric>

#include "partition/schedule.hpp"

namespace lpurt::partition {

namespace {

constexpr int64_t never = std::numeric_limits<int64_t>::max();

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

const char* policy_name(ServePolicy p) {
  return p == ServePolicy::decode_priority ? "decode-priority" : "static-batch";
}

const char* router_name(ServeRouter r) { return r == ServeRouter::round_robin ? "round-robin" : "least-loaded"; }

const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names = {"decode-priority", "static-batch"};
  return names;
}

ServePolicy parse_policy(const std::string& name) {
  if (name == "decode-priority") return ServePolicy::decode_priority;
  if (name == "static-batch") return ServePolicy::static_batch;
  throw WorkloadError("--policy must be decode-priority or static-batch (got \"" + name + "\")", ExitCode::usage);
}

ServeRouter parse_router(const std::string& name) {
  if (name == "round-robin") return ServeRouter::round_robin;
  if (name == "least-loaded") return ServeRouter::least_loaded;
  throw WorkloadError("--router must be round-robin or least-loaded (got \"" + name + "\")", ExitCode::usage);
}

ServeCosts::ServeCosts(const Plan& plan, const std::vector<ServeRequest>& requests)
    : uniform_(plan.hardware.uniform()) {
  const int64_t block = plan.shape.block_tokens;
  shapes_.push_back(block);
  for (int64_t s = int64_t{1} << 62; s >= 1; s /= 2)
    if (s < block) shapes_.push_back(s);
  // The positions the requests that fit can reach: decode turns feed positions up to prompt + output - 2,
  // chunks start below the longest prompt, or, with a shared KV pool (a preempted request prefills its prompt
  // and its generated tokens again), below the longest request's KV positions.
  int64_t longest_prompt = 0, last_decode_position = 0;
  for (const ServeRequest& r : requests) {
    if (kv_positions(r) > plan.shape.context) continue;
    longest_prompt = std::max(longest_prompt, plan.shape.kv_pool_tokens > 0 ? kv_positions(r) : r.prompt_tokens);
    last_decode_position = std::max(last_decode_position, kv_positions(r) - 1);
  }
  const Topology topology = topology_for(plan);
  const int64_t n_tables = uniform_ ? 1 : plan.replicas;
  tables_.resize(static_cast<std::size_t>(n_tables));
  for (int64_t replica = 0; replica < n_tables; ++replica) {
    Table& t = tables_[static_cast<std::size_t>(replica)];
    const Program decode = build_program(plan, topology, decode_blocks(replica));
    t.decode = block_costs(plan, decode, 0, last_decode_position + 1, &programs_modelled_);
    t.chunks.resize(shapes_.size());
    for (std::size_t k = 0; k < shapes_.size(); ++k) {
      const int64_t shape = shapes_[k];
      if (shape > longest_prompt) continue;
      const Program chunk = build_program(plan, topology, {{0, shape, true, replica}});
      t.chunks[k] = block_costs(plan, chunk, 0, longest_prompt - shape + 1, &programs_modelled_);
    }
  }
}

const BlockCost& ServeCosts::decode(int64_t replica, int64_t position) const {
  const Table& t = table(replica);
  LPURT_ASSERT(position >= 0 && position < static_cast<int64_t>(t.decode.size()));
  return t.decode[static_cast<std::size_t>(position)];
}

const BlockCost& ServeCosts::chunk(int64_t replica, std::size_t shape, int64_t position) const {
  const Table& t = table(replica);
  LPURT_ASSERT(shape < t.chunks.size() && position >= 0 && position < static_cast<int64_t>(t.chunks[shape].size()));
  return t.chunks[shape][static_cast<std::size_t>(position)];
}

namespace {

/// The simulation's state and its steps (one object per simulate_serving call).
class Simulation {
 public:
  Simulation(const Plan& plan, const ServeCosts& costs, const std::vector<ServeRequest>& requests,
             const ServeOptions& options)
      : plan_(plan), costs_(costs), requests_(requests), options_(options), slots_(plan.shape.n_slots) {
    if (options.kv_page_tokens < 1)
      throw WorkloadError("--kv-page-tokens must be at least 1 (got " + std::to_string(options.kv_page_tokens) + ")",
                          ExitCode::usage);
    out_.requests.resize(requests.size());
    // Cycles are int64: arrivals must stay far below 2^63 cycles (a million seconds at 100 GHz is 2^56).
    for (const ServeRequest& r : requests)
      if (!(r.arrived_at_s >= 0 && r.arrived_at_s * plan.hardware.clock_hz < 0x1p60))
        throw WorkloadError("request " + std::to_string(r.id) + " arrives at " + format_number(r.arrived_at_s) +
                                " s: arrivals must be 0 .. " + format_number(0x1p60 / plan.hardware.clock_hz) +
                                " s at this clock",
                            ExitCode::usage);
    // The pool: the plan's shared pages, else every slot's context in whole pages.
    out_.kv_pages_per_replica = plan.shape.kv_pool_tokens > 0
                                    ? plan.shape.kv_pool_tokens / options.kv_page_tokens
                                    : slots_ * ceil_div(plan.shape.context, options.kv_page_tokens);
    int64_t kv_bytes = 0;  // replica 0's KV SRAM, all its chips, for plan.shape.kv_tokens() positions
    for (const ChipPlan& c : plan.chips)
      if (c.replica == 0) kv_bytes += c.sram.kv_cache_bytes;
    out_.kv_page_bytes = kv_bytes / plan.shape.kv_tokens() * options.kv_page_tokens;
    generated_.assign(requests.size(), 0);
    not_before_.assign(requests.size(), 0);
    replicas_.resize(static_cast<std::size_t>(plan.replicas));
    for (Replica& r : replicas_) r.slots.resize(static_cast<std::size_t>(slots_));
  }

  ServeOutcome run() {
    // Arrival order: by arrival cycle, ties by id.
    std::vector<int64_t> order(requests_.size());
    std::iota(order.begin(), order.end(), int64_t{0});
    for (std::size_t i = 0; i < requests_.size(); ++i)
      out_.requests[i].arrived_cycles = std::llround(requests_[i].arrived_at_s * plan_.hardware.clock_hz);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return out_.requests[static_cast<std::size_t>(a)].arrived_cycles <
             out_.requests[static_cast<std::size_t>(b)].arrived_cycles;
    });
    std::size_t next_arrival = 0;
    int64_t routed = 0;
    for (;;) {
      const int64_t t_arrival = next_arrival < order.size()
                                    ? out_.requests[static_cast<std::size_t>(order[next_arrival])].arrived_cycles
                                    : never;
      std::size_t soonest = 0;  // the replica whose next iteration comes first (ties: lowest index)
      for (std::size_t r = 1; r < replicas_.size(); ++r)
        if (replicas_[r].next_start < replicas_[soonest].next_start) soonest = r;
      const int64_t t_iteration = replicas_[soonest].next_start;
      if (t_arrival == never && t_iteration == never) break;
      if (t_arrival <= t_iteration) {
        arrive(order[next_arrival++], t_arrival, routed);
      } else if (options_.policy == ServePolicy::decode_priority) {
        iterate(static_cast<int64_t>(soonest), t_iteration);
      } else {
        batch(static_cast<int64_t>(soonest), t_iteration);
      }
    }
    for (Replica& rep : replicas_) settle(rep, never);
    finish_samples();
    return std::move(out_);
  }

 private:
  struct Slot {
    int64_t request = -1;       ///< -1: free
    int64_t prefill_target = 0; ///< tokens its prefill feeds: the prompt, and after a preemption the tokens out
    int64_t prefilled = 0;      ///< prefill tokens fed so far
    int64_t generated = 0;     ///< tokens out so far
    int64_t ready_cycles = 0;  ///< when its last token is back (a decode turn needs it)
    int64_t pages = 0;
    int64_t admitted = 0;  ///< admission sequence number (prefill order)
  };
  struct Replica {
    std::deque<int64_t> queue;       ///< requests waiting, in arrival order
    std::vector<Slot> slots;         ///< [n_slots]
    int64_t active = 0;              ///< slots holding a request
    int64_t next_start = never;      ///< its next iteration (never: idle)
    int64_t free_at = 0;             ///< the end of its last iteration
    int64_t pages = 0;               ///< KV pages in use
    std::vector<std::size_t> batch;  ///< static-batch: the slots of the batch running until free_at
  };

  const ServeRequest& request(int64_t i) const { return requests_[static_cast<std::size_t>(i)]; }
  RequestOutcome& outcome(int64_t i) { return out_.requests[static_cast<std::size_t>(i)]; }

  /// A counter change at `cycles` (recorded as a change, summed in time order at the end: a static
  /// batch knows its future changes when it starts).
  void change(int64_t cycles, int64_t queued, int64_t active, int64_t pages) {
    deltas_.push_back({cycles, queued, active, pages});
  }

  void arrive(int64_t id, int64_t t, int64_t& routed) {
    for (Replica& rep : replicas_) settle(rep, t);
    const ServeRequest& r = request(id);
    if (kv_positions(r) > plan_.shape.context || pages_of(kv_positions(r)) > out_.kv_pages_per_replica) {
      outcome(id).rejected = true;
      return;
    }
    std::size_t target = 0;
    if (options_.router == ServeRouter::round_robin) {
      target = static_cast<std::size_t>(routed % plan_.replicas);
    } else {
      for (std::size_t k = 1; k < replicas_.size(); ++k)
        if (load(replicas_[k]) < load(replicas_[target])) target = k;
    }
    ++routed;
    Replica& rep = replicas_[target];
    rep.queue.push_back(id);
    outcome(id).replica = static_cast<int64_t>(target);
    change(t, 1, 0, 0);
    // An idle replica wakes for it; a decode-priority replica waiting only for tokens in flight wakes early
    // if a slot is free, to start the prefill (a running static batch admits nobody).
    const int64_t earliest = std::max(t, rep.free_at);
    if (rep.next_start == never || (options_.policy == ServePolicy::decode_priority && rep.active < slots_))
      rep.next_start = std::min(rep.next_start, earliest);
  }

  static int64_t load(const Replica& r) { return static_cast<int64_t>(r.queue.size()) + r.active; }

  /// Pages of a request holding `positions` KV positions.
  int64_t pages_of(int64_t positions) const { return ceil_div(positions, options_.kv_page_tokens); }

  /// Whether the head of `rep`'s queue can take a slot at t (decode-priority): a slot is free, its last token
  /// (if it was preempted) is back, and the pages its prefill will write are free beyond those the
  /// requests still prefilling will write.
  bool can_admit(const Replica& rep, int64_t t) const {
    if (rep.queue.empty() || rep.active == slots_) return false;
    const int64_t id = rep.queue.front();
    if (not_before_[static_cast<std::size_t>(id)] > t) return false;
    int64_t promised = 0;
    for (const Slot& slot : rep.slots)
      if (slot.request >= 0 && slot.prefilled < slot.prefill_target)
        promised += pages_of(slot.prefill_target) - slot.pages;
    return out_.kv_pages_per_replica - rep.pages - promised >= pages_of(prefill_target(id));
  }

  /// Tokens a request's prefill feeds: its prompt, and the tokens it has generated (recompute).
  int64_t prefill_target(int64_t id) const {
    return request(id).prompt_tokens + generated_[static_cast<std::size_t>(id)];
  }

  /// Gives slot `s` the pages of `positions`, at t; when the pool runs out, preempts the most recently
  /// admitted unfinished request of the replica until they fit. False if that was slot s's own request.
  bool take_pages(Replica& rep, std::size_t s, int64_t positions, int64_t t) {
    if (positions <= rep.slots[s].pages * options_.kv_page_tokens) return true;  // within its last page
    const int64_t more = pages_of(positions) - rep.slots[s].pages;
    while (rep.pages + more > out_.kv_pages_per_replica) {
      std::size_t victim = rep.slots.size();
      for (std::size_t k = 0; k < rep.slots.size(); ++k) {
        const Slot& slot = rep.slots[k];
        if (slot.request < 0 || slot.generated == request(slot.request).output_tokens) continue;
        if (victim == rep.slots.size() || slot.admitted > rep.slots[victim].admitted) victim = k;
      }
      LPURT_ASSERT(victim < rep.slots.size());
      preempt(rep, victim, t);
      if (victim == s) return false;
    }
    grow_pages(rep, rep.slots[s], positions, t);
    return true;
  }

  /// vLLM's recompute preemption: the request gives back its slot and pages and goes to the front of the
  /// queue; admitted again, it prefills its prompt and the tokens it has generated (the same KV), then
  /// goes on. A token still in the pipeline is kept: the request waits for it before its new prefill.
  void preempt(Replica& rep, std::size_t s, int64_t t) {
    Slot& slot = rep.slots[s];
    const auto id = static_cast<std::size_t>(slot.request);
    generated_[id] = slot.generated;
    not_before_[id] = slot.ready_cycles;
    ++out_.requests[id].preemptions;
    ++out_.preemptions;
    rep.queue.push_front(slot.request);
    rep.pages -= slot.pages;
    change(t, 1, -1, -slot.pages);
    slot = Slot{};
    --rep.active;
  }

  /// Sets a slot's pages to those of `positions`, recording the change at `t`.
  void grow_pages(Replica& rep, Slot& slot, int64_t positions, int64_t t) {
    const int64_t pages = pages_of(positions);
    if (pages == slot.pages) return;
    rep.pages += pages - slot.pages;
    change(t, 0, 0, pages - slot.pages);
    slot.pages = pages;
    LPURT_ASSERT(rep.pages <= out_.kv_pages_per_replica);
    out_.max_kv_pages_in_use = std::max(out_.max_kv_pages_in_use, rep.pages);
  }

  /// Gives the lowest free slot to the head of the queue; returns the slot.
  std::size_t admit(int64_t replica, Replica& rep, int64_t t) {
    const int64_t id = rep.queue.front();
    rep.queue.pop_front();
    std::size_t s = 0;
    while (rep.slots[s].request >= 0) ++s;
    Slot& slot = rep.slots[s];
    slot = Slot{};
    slot.request = id;
    slot.prefill_target = prefill_target(id);
    slot.generated = generated_[static_cast<std::size_t>(id)];
    slot.ready_cycles = not_before_[static_cast<std::size_t>(id)];
    slot.admitted = admissions_++;
    ++rep.active;
    RequestOutcome& o = outcome(id);
    o.slot = static_cast<int64_t>(s);
    if (o.admitted_cycles < 0) o.admitted_cycles = t;
    o.resumed_cycles = t;
    LPURT_ASSERT(o.replica == replica);
    change(t, -1, 1, 0);
    return s;
  }

  void release(Replica& rep, Slot& slot, int64_t t) {
    rep.pages -= slot.pages;
    change(t, 0, -1, -slot.pages);
    slot = Slot{};
    --rep.active;
  }

  void record_turn(int64_t id, int64_t replica, int64_t slot, int64_t position, int64_t n, bool emits, int64_t entry,
                   const BlockCost& cost) {
    ++out_.n_turns;
    if (options_.record_turns || static_cast<int64_t>(out_.turns.size()) < options_.max_turn_records)
      out_.turns.push_back(
          {id, replica, slot, position, n, emits, out_.n_iterations, entry, entry + cost.latency_cycles});
  }

  void record_iteration(int64_t replica, int64_t start, int64_t period, int64_t decode_turns, int64_t prefill_tokens) {
    ++out_.n_iterations;
    if (static_cast<int64_t>(out_.iterations.size()) < options_.max_iteration_records)
      out_.iterations.push_back({replica, start, period, decode_turns, prefill_tokens});
  }

  /// The largest chunk shape of at most `remaining` tokens at `position` whose busiest stage fits `budget`
  /// (or the smallest shape if `force`); -1 if none.
  int64_t pick_shape(int64_t replica, int64_t remaining, int64_t position, int64_t budget, bool force) const {
    const auto& shapes = costs_.chunk_shapes();
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      if (shapes[k] > remaining) continue;
      if (costs_.chunk(replica, k, position).busiest_stage_cycles <= budget) return static_cast<int64_t>(k);
    }
    return force ? static_cast<int64_t>(shapes.size() - 1) : -1;
  }

  /// One decode-priority iteration of `replica` starting at t.
  void iterate(int64_t replica, int64_t t) {
    Replica& rep = replicas_[static_cast<std::size_t>(replica)];
    while (can_admit(rep, t)) admit(replica, rep, t);
    int64_t offset = 0, latency = 0, widest_beat = 0, busy = 0, decode_turns = 0, prefill_tokens = 0;
    std::vector<std::size_t>& finished = finished_;
    finished.clear();
    // Decode turns, in slot order: every decoding slot whose last token is back when its turn enters the
    // pipeline (in the steady state a slot enters at the same offset each iteration, one period after its
    // previous token entered). A slot not yet ready at its place gets a second chance after the others.
    deferred_.clear();
    auto decode = [&](std::size_t s) {
      Slot& slot = rep.slots[s];
      const ServeRequest& r = request(slot.request);
      const int64_t position = r.prompt_tokens + slot.generated - 1;
      if (!take_pages(rep, s, position + 1, t + offset)) return;
      const BlockCost& c = costs_.decode(replica, position);
      record_turn(slot.request, replica, static_cast<int64_t>(s), position, 1, true, t + offset, c);
      slot.ready_cycles = t + offset + c.latency_cycles;
      if (++slot.generated == r.output_tokens) {
        outcome(slot.request).finished_cycles = slot.ready_cycles;
        finished.push_back(s);
      }
      latency = std::max(latency, c.latency_cycles);
      widest_beat = std::max(widest_beat, c.busiest_stage_cycles);
      offset += c.busiest_stage_cycles;
      busy += c.busy_chip_cycles;
      ++decode_turns;
    };
    auto decoding = [&](std::size_t s) {
      const Slot& slot = rep.slots[s];
      return slot.request >= 0 && slot.prefilled == slot.prefill_target &&
             slot.generated < request(slot.request).output_tokens;
    };
    for (std::size_t s = 0; s < rep.slots.size(); ++s) {
      if (!decoding(s)) continue;
      if (rep.slots[s].ready_cycles <= t + offset)
        decode(s);
      else
        deferred_.push_back(s);
    }
    // (A preemption may have emptied a deferred slot.)
    for (const std::size_t s : deferred_)
      if (decoding(s) && rep.slots[s].ready_cycles <= t + offset) decode(s);
    // Prefill fills what the decode turns leave of the iteration's capacity: the period of all n_slots
    // slots decoding. With no decode turn there is nothing to protect: each prefilling request gets one
    // chunk of the largest shape.
    const bool protect = decode_turns > 0;
    int64_t budget = protect ? std::max(latency, slots_ * widest_beat) - offset : never;
    prefilling_.clear();
    for (std::size_t s = 0; s < rep.slots.size(); ++s) {
      const Slot& slot = rep.slots[s];
      if (slot.request >= 0 && slot.prefilled < slot.prefill_target) prefilling_.push_back(s);
    }
    std::sort(prefilling_.begin(), prefilling_.end(),
              [&](std::size_t a, std::size_t b) { return rep.slots[a].admitted < rep.slots[b].admitted; });
    for (const std::size_t s : prefilling_) {
      Slot& slot = rep.slots[s];
      if (slot.request < 0) continue;  // preempted in this iteration
      const ServeRequest& r = request(slot.request);
      while (slot.prefilled < slot.prefill_target) {
        if (budget <= 0 && prefill_tokens > 0) break;
        const int64_t k =
            pick_shape(replica, slot.prefill_target - slot.prefilled, slot.prefilled, budget, prefill_tokens == 0);
        if (k < 0) break;
        const int64_t n = costs_.chunk_shapes()[static_cast<std::size_t>(k)];
        if (!take_pages(rep, s, slot.prefilled + n, t + offset)) break;
        const BlockCost& c = costs_.chunk(replica, static_cast<std::size_t>(k), slot.prefilled);
        const bool last = slot.prefilled + n == slot.prefill_target;
        record_turn(slot.request, replica, static_cast<int64_t>(s), slot.prefilled, n, last, t + offset, c);
        slot.prefilled += n;
        if (last) {
          slot.ready_cycles = t + offset + c.latency_cycles;
          if (slot.generated++ == 0) outcome(slot.request).first_token_cycles = slot.ready_cycles;
          if (slot.generated == r.output_tokens) {
            outcome(slot.request).finished_cycles = slot.ready_cycles;
            finished.push_back(s);
          }
        }
        offset += c.busiest_stage_cycles;
        busy += c.busy_chip_cycles;
        prefill_tokens += n;
        if (protect)
          budget -= c.busiest_stage_cycles;
        else
          break;  // one chunk per request
      }
      if (budget <= 0 && prefill_tokens > 0) break;
    }
    const int64_t period = std::max(latency, offset);
    const int64_t end = t + period;
    out_.busy_chip_cycles += busy;
    // An iteration without a turn (its prefill preempted, the decoding tokens still out) is none.
    if (decode_turns + prefill_tokens > 0) record_iteration(replica, t, period, decode_turns, prefill_tokens);
    for (const std::size_t s : finished) release(rep, rep.slots[s], end);
    rep.free_at = end;
    rep.next_start = next_start(rep, end);
    LPURT_ASSERT(rep.next_start > t || decode_turns + prefill_tokens > 0);
  }

  /// When a decode-priority replica works next after an iteration ending at `end`.
  int64_t next_start(const Replica& rep, int64_t end) const {
    int64_t earliest = never;
    // The head of the queue when it can take a slot (pages are given back only by this replica's work).
    if (can_admit(rep, never - 1))
      earliest = std::max(end, not_before_[static_cast<std::size_t>(rep.queue.front())]);
    for (const Slot& slot : rep.slots) {
      if (slot.request < 0) continue;
      if (slot.prefilled < slot.prefill_target) return end;
      earliest = std::min(earliest, std::max(end, slot.ready_cycles));
    }
    return earliest;
  }

  /// Releases the slots of a static batch that has ended by t (at its end).
  void settle(Replica& rep, int64_t t) {
    if (rep.batch.empty() || rep.free_at > t) return;
    for (const std::size_t s : rep.batch) release(rep, rep.slots[s], rep.free_at);
    rep.batch.clear();
  }

  /// A static batch of `replica` starting at t: the whole batch is decided at once, and its slots stay
  /// held until it ends.
  void batch(int64_t replica, int64_t t) {
    Replica& rep = replicas_[static_cast<std::size_t>(replica)];
    settle(rep, t);
    LPURT_ASSERT(rep.active == 0 && !rep.queue.empty());
    std::vector<std::size_t>& members = rep.batch;
    // A static batch reserves each member's whole KV (it never preempts): members join while the pool
    // holds them all.
    int64_t reserved_pages = 0;
    while (!rep.queue.empty() && rep.active < slots_ &&
           reserved_pages + pages_of(kv_positions(request(rep.queue.front()))) <= out_.kv_pages_per_replica) {
      reserved_pages += pages_of(kv_positions(request(rep.queue.front())));
      members.push_back(admit(replica, rep, t));
    }
    LPURT_ASSERT(!members.empty());
    // Prefill: every member's prompt in chunks of block_tokens (a shorter tail in smaller shapes), one
    // after another into the pipeline, as `lpurt run` feeds a batch.
    int64_t offset = 0, busy = 0, prefill_end = t;
    const auto& shapes = costs_.chunk_shapes();
    for (const std::size_t s : members) {
      Slot& slot = rep.slots[s];
      const ServeRequest& r = request(slot.request);
      int64_t prefill_tokens = 0;
      const int64_t start = offset;
      while (slot.prefilled < r.prompt_tokens) {
        const int64_t remaining = r.prompt_tokens - slot.prefilled;
        std::size_t k = 0;
        while (shapes[k] > remaining) ++k;
        const int64_t n = shapes[k];
        const BlockCost& c = costs_.chunk(replica, k, slot.prefilled);
        const bool last = n == remaining;
        record_turn(slot.request, replica, static_cast<int64_t>(s), slot.prefilled, n, last, t + offset, c);
        grow_pages(rep, slot, slot.prefilled + n, t + offset);
        slot.prefilled += n;
        prefill_tokens += n;
        if (last) {
          slot.generated = 1;
          slot.ready_cycles = t + offset + c.latency_cycles;
          outcome(slot.request).first_token_cycles = slot.ready_cycles;
          prefill_end = std::max(prefill_end, slot.ready_cycles);
        }
        offset += c.busiest_stage_cycles;
        busy += c.busy_chip_cycles;
      }
      record_iteration(replica, t + start, offset - start, 0, prefill_tokens);
      if (r.output_tokens == 1) outcome(slot.request).finished_cycles = slot.ready_cycles;
    }
    // Decode rounds from the end of the prefill, at the period of the static schedule's n_slots slots: the
    // k-th member enters k stage times into each round (a finished member's place stays a bubble), and a
    // round starts late if a member's previous token would not be back by its entry.
    int64_t round_start = prefill_end;
    for (;;) {
      int64_t latency = 0, stage = 0, turns = 0;
      for (const std::size_t s : members) {
        const Slot& slot = rep.slots[s];
        if (slot.generated == request(slot.request).output_tokens) continue;
        const BlockCost& c = costs_.decode(replica, request(slot.request).prompt_tokens + slot.generated - 1);
        latency = std::max(latency, c.latency_cycles);
        stage = std::max(stage, c.busiest_stage_cycles);
        ++turns;
      }
      if (turns == 0) break;
      for (std::size_t k = 0; k < members.size(); ++k) {
        const Slot& slot = rep.slots[members[k]];
        if (slot.generated < request(slot.request).output_tokens)
          round_start = std::max(round_start, slot.ready_cycles - static_cast<int64_t>(k) * stage);
      }
      for (std::size_t k = 0; k < members.size(); ++k) {
        const std::size_t s = members[k];
        Slot& slot = rep.slots[s];
        const ServeRequest& r = request(slot.request);
        if (slot.generated == r.output_tokens) continue;
        const int64_t position = r.prompt_tokens + slot.generated - 1;
        const BlockCost& c = costs_.decode(replica, position);
        const int64_t entry = round_start + static_cast<int64_t>(k) * stage;
        record_turn(slot.request, replica, static_cast<int64_t>(s), position, 1, true, entry, c);
        grow_pages(rep, slot, position + 1, entry);
        slot.ready_cycles = entry + c.latency_cycles;
        if (++slot.generated == r.output_tokens) outcome(slot.request).finished_cycles = slot.ready_cycles;
        busy += c.busy_chip_cycles;
      }
      const int64_t period = std::max(latency, slots_ * stage);
      record_iteration(replica, round_start, period, turns, 0);
      round_start += period;
    }
    int64_t end = round_start;
    for (const std::size_t s : members) end = std::max(end, rep.slots[s].ready_cycles);
    out_.busy_chip_cycles += busy;
    rep.free_at = end;
    // Requests that arrive during the batch wake the replica at its end (arrive() uses free_at).
    rep.next_start = rep.queue.empty() ? never : end;
  }

  /// The counters in time order (changes at one moment merged), from the recorded changes.
  void finish_samples() {
    std::stable_sort(deltas_.begin(), deltas_.end(),
                     [](const ServeSample& a, const ServeSample& b) { return a.cycles < b.cycles; });
    ServeSample now;
    for (std::size_t i = 0; i < deltas_.size(); ++i) {
      now.cycles = deltas_[i].cycles;
      now.queued += deltas_[i].queued;
      now.active += deltas_[i].active;
      now.kv_pages += deltas_[i].kv_pages;
      if (i + 1 < deltas_.size() && deltas_[i + 1].cycles == now.cycles) continue;
      out_.samples.push_back(now);
    }
  }

  const Plan& plan_;
  const ServeCosts& costs_;
  const std::vector<ServeRequest>& requests_;
  ServeOptions options_;
  int64_t slots_;
  std::vector<Replica> replicas_;
  ServeOutcome out_;
  std::vector<ServeSample> deltas_;
  int64_t admissions_ = 0;
  std::vector<int64_t> generated_;   ///< [requests] tokens out when last preempted (0: never)
  std::vector<int64_t> not_before_;  ///< [requests] when a preempted request's last token is back
  std::vector<std::size_t> finished_, prefilling_, deferred_;  ///< scratch of iterate()
};

}  // namespace

ServeOutcome simulate_serving(const Plan& plan, const ServeCosts& costs, const std::vector<ServeRequest>& requests,
                              const ServeOptions& options) {
  return Simulation(plan, costs, requests, options).run();
}

std::vector<StageSlice> stage_slices(const Plan& plan, const ServeOutcome& outcome, int64_t max_turns) {
  const std::size_t n = std::min(outcome.turns.size(), static_cast<std::size_t>(std::max<int64_t>(0, max_turns)));
  const auto pp = static_cast<std::size_t>(plan.pp);
  // The stage spans of each program the turns run (a replica's when chips or links differ, and a block
  // size), over the positions they reach.
  struct Spans {
    int64_t first_position = 0, last_position = 0;
    std::vector<StageSpan> spans;  ///< [positions x pp]
  };
  const bool uniform = plan.hardware.uniform();
  auto key = [&](const Turn& t) { return std::make_pair(uniform ? int64_t{0} : t.replica, t.n_tokens); };
  std::map<std::pair<int64_t, int64_t>, Spans> programs;
  for (std::size_t i = 0; i < n; ++i) {
    const Turn& t = outcome.turns[i];
    auto [it, added] = programs.try_emplace(key(t), Spans{t.position, t.position, {}});
    it->second.first_position = std::min(it->second.first_position, t.position);
    it->second.last_position = std::max(it->second.last_position, t.position);
  }
  const Topology topology = topology_for(plan);
  for (auto& [k, p] : programs) {
    const Program program = build_program(plan, topology, {{0, k.second, true, k.first}});
    p.spans = block_stage_spans(plan, program, p.first_position, p.last_position - p.first_position + 1);
  }
  std::vector<StageSlice> slices;
  slices.reserve(n * pp);
  std::vector<std::vector<int64_t>> stage_free(static_cast<std::size_t>(plan.replicas), std::vector<int64_t>(pp, 0));
  for (std::size_t i = 0; i < n; ++i) {
    const Turn& t = outcome.turns[i];
    const Spans& p = programs.at(key(t));
    const StageSpan* spans = p.spans.data() + static_cast<std::size_t>(t.position - p.first_position) * pp;
    std::vector<int64_t>& free = stage_free[static_cast<std::size_t>(t.replica)];
    int64_t wait = 0;
    for (std::size_t s = 0; s < pp; ++s) {
      const int64_t start = std::max(t.entry_cycles + spans[s].first_cycles + wait, free[s]);
      wait = start - t.entry_cycles - spans[s].first_cycles;
      const int64_t end = start + spans[s].last_cycles - spans[s].first_cycles;
      free[s] = end;
      slices.push_back({static_cast<int64_t>(i), static_cast<int64_t>(s), start, end});
    }
  }
  return slices;
}

}  // namespace lpurt::partition
