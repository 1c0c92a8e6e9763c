#include "runtime/engine.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <thread>

#include <linux/futex.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>

#include "chip/error.hpp"
#include "chip/hash.hpp"
#include "partition/timing.hpp"

namespace lpurt::runtime {

using partition::Op;
using partition::OpKind;
using partition::Payload;
using chip::mix;

namespace {

/// A 64-bit checksum of a transfer's bytes, eight at a time: any single flipped bit changes it.
uint64_t checksum(const void* data, int64_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = mix(static_cast<uint64_t>(bytes));
  int64_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    h = mix(h ^ word);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p + i, static_cast<std::size_t>(bytes - i));
  return mix(h ^ tail);
}

/// amax values a token has in a reduce_max: one, or in an MoE layer one per chosen expert (the largest).
int64_t amax_per_token(const chip::ModelConfig& cfg) { return std::max<int64_t>(1, cfg.n_experts_per_token); }

}  // namespace

int Engine::rank_of_chip(int64_t chip, int64_t n_chips, int n_ranks) {
  // Inverse of "rank r holds chips [n_chips * r / n_ranks, n_chips * (r + 1) / n_ranks)".
  return static_cast<int>(((chip + 1) * n_ranks - 1) / n_chips);
}

Engine::Engine(const partition::Plan& plan, io::WeightSource& source, MPI_Comm comm, bool timing_only,
               const FaultOptions& faults)
    : plan_(plan), topology_(partition::topology_for(plan)), comm_(comm), timing_only_(timing_only), faults_(faults) {
  const chip::ModelConfig& cfg = plan.model;
  // Without MPI_Init (unit tests, tools) the engine is one rank and makes no MPI call.
  if (mpi_initialized()) {
    rank_ = comm_rank(comm_);
    n_ranks_ = comm_size(comm_);
  }
  if (faults.mpi_error_rank >= 0 && !mpi_initialized())
    throw Error("--inject-mpi-error needs MPI: start lpurt under mpirun", ExitCode::usage);
  if (n_ranks_ > plan.n_chips())
    throw Error(std::to_string(n_ranks_) + " MPI ranks for " + std::to_string(plan.n_chips()) + " chips" +
                    (plan.idle_chips() > 0 ? " in use (" + std::to_string(plan.idle_chips()) + " of the system's " +
                                                 std::to_string(plan.system_chips) + " idle)"
                                           : std::string()) +
                    ": every rank must host at least one chip; use fewer ranks, or a layout that uses more chips "
                    "(--tp, --pp, --replicas)",
                ExitCode::config);
  if (!(faults.link_error_rate >= 0 && faults.link_error_rate <= 1))
    throw Error("--inject-link-errors must be a probability in [0, 1]", ExitCode::usage);
  if (faults.max_replays < 0) throw Error("--max-replays must be at least 0", ExitCode::usage);
  for (const LinkFault& f : faults.link_faults)
    if (f.from < 0 || f.from >= plan.n_chips() || f.to < 0 || f.to >= plan.n_chips() || f.from == f.to || f.call < 0)
      throw Error("--inject-link-fault " + std::to_string(f.from) + "-" + std::to_string(f.to) + "@" +
                      std::to_string(f.call) + ": needs two different chips of the " + std::to_string(plan.n_chips()) +
                      " and a forward call >= 0",
                  ExitCode::usage);
  share_host();
  const int64_t b = plan.shape.block_tokens, d = cfg.hidden_size, tp = plan.tp;
  // What one reduce-scatter step receives, at most: a block's expert slots (or its activations), whichever
  // algorithm the schedule chose.
  receive_elements_ = partition::receive_bound_elements(
      plan.reduction(cfg.is_moe() ? partition::Reduced::expert_slots : partition::Reduced::linear_output, b).elements, tp);
  owner_.resize(static_cast<std::size_t>(plan.n_chips()));
  std::size_t n_local = 0;
  for (const auto& c : plan.chips) {
    owner_[static_cast<std::size_t>(c.chip)] = rank_of_chip(c.chip, plan.n_chips(), n_ranks_);
    n_local += owner_[static_cast<std::size_t>(c.chip)] == rank_ ? 1 : 0;
  }
  chips_.resize(n_local);  // never resized again: local_index_ points into it
  logits_counts_.assign(static_cast<std::size_t>(plan.replicas), std::vector<int>(static_cast<std::size_t>(n_ranks_), 0));
  logits_offsets_ = logits_counts_;
  for (const auto& c : plan.chips) {
    if (c.range.n_vocab() == 0) continue;
    const auto replica = static_cast<std::size_t>(c.replica), owner = static_cast<std::size_t>(owner_[static_cast<std::size_t>(c.chip)]);
    int& count = logits_counts_[replica][owner];
    int& offset = logits_offsets_[replica][owner];
    if (count == 0) offset = static_cast<int>(c.range.vocab_begin);
    LPURT_ASSERT(offset + count == c.range.vocab_begin);
    count += static_cast<int>(c.range.n_vocab());
  }
  for (const auto& c : plan.chips)
    if (owner_[static_cast<std::size_t>(c.chip)] == rank_) {
      first_local_chip_ = c.chip;
      break;
    }
  local_index_.assign(static_cast<std::size_t>(plan.n_chips()), nullptr);
  std::size_t next = 0;
  for (const auto& c : plan.chips) {
    if (owner_[static_cast<std::size_t>(c.chip)] != rank_) continue;
    LocalChip& lc = chips_[next++];
    local_index_[static_cast<std::size_t>(c.chip)] = &lc;
    lc.pending_messages.reserve(static_cast<std::size_t>(2 * n_ranks_));  // two rounds in flight, one message a peer
    if (timing_only) continue;
    lc.shard = std::make_unique<chip::Shard>(cfg, c.range, plan.shape);
    io::load_shard(source, *lc.shard);
    lc.x.assign(static_cast<std::size_t>(b * d), 0.0f);
    lc.amax.assign(static_cast<std::size_t>(b * amax_per_token(cfg)), 0.0f);
    lc.peer_amax.assign(static_cast<std::size_t>(tp * b * amax_per_token(cfg)), 0.0f);
    lc.sums.assign(static_cast<std::size_t>(b * d), 0);
    lc.rs_sums.assign(static_cast<std::size_t>(receive_elements_), 0);
    lc.rs_floats.assign(static_cast<std::size_t>(receive_elements_), 0.0f);
    // A stage cut inside an FFN: its first chips receive, its last chips send, the hand-off.
    auto cut_inside_ffn = [&](int64_t part) {
      return part < chip::n_parts(cfg) && chip::part_kind(part) == chip::LayerPart::ffn_out;
    };
    if (cut_inside_ffn(c.range.part_begin) || cut_inside_ffn(c.range.part_end))
      lc.hand_off.assign(static_cast<std::size_t>(b * d + chip::ffn_hand_off_values(cfg, c.range, b)), 0.0f);
  }
  parallel_group_.reserve(chips_.size());
  trailer_bytes_ = faults.checked() && !timing_only ? static_cast<int64_t>(sizeof(uint64_t)) : 0;
  prepare(1);  // the decode program, before step 0
}

void Engine::prepare(int64_t n_tokens) {
  // Every replica: a rank runs every forward call, also for replicas it holds no chip of (an empty
  // exchange, found in the step without being built there).
  for (int64_t replica = 0; replica < plan_.replicas; ++replica) exchange(n_tokens, replica);
}

Engine::~Engine() = default;

Engine::HostShare::~HostShare() {
  // MPI_Win_free is collective: while an error unwinds, the other ranks may never get here, and the job is
  // about to be aborted anyway.
  if (window != MPI_WIN_NULL && std::uncaught_exceptions() == 0 && mpi_initialized()) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized == 0) MPI_Win_free(&window);
  }
}

void Engine::share_host() {
  // Collective over comm_, before anything that can fail on one rank only (loading weights): the checks
  // above fail alike on every rank.
  const int cores = tbb::this_task_arena::max_concurrency();
  for (int k = 1; k <= cores; ++k) arenas_.push_back(std::make_unique<tbb::task_arena>(k));
  if (n_ranks_ == 1) return;
  present_.assign(static_cast<std::size_t>(n_ranks_), false);
  presence_requests_.assign(static_cast<std::size_t>(n_ranks_), MPI_REQUEST_NULL);
  // Round tags are below 32768; notes get the next tag where MPI allows it (Open MPI: up to 2^31 - 1).
  int* tag_ub = nullptr;
  int has_tag_ub = 0;
  LPURT_MPI_CHECK(MPI_Comm_get_attr(comm_, MPI_TAG_UB, &tag_ub, &has_tag_ub));
  if (has_tag_ub != 0 && *tag_ub >= 32768) presence_tag_ = 32768;
  const Comm host = Comm::split_type_shared(comm_);
  const int host_ranks = comm_size(host.get());
  // Ranks bound to cores of their own (mpirun --map-by slot:PE=n) have nothing to give: they never sleep.
  // The host's ranks decide alike (from the most cores any of them may use), as what follows is collective.
  int most_cores = cores;
  LPURT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &most_cores, 1, MPI_INT, MPI_MAX, host.get()));
  if (host_ranks == 1 || static_cast<unsigned>(most_cores * host_ranks) <= std::thread::hardware_concurrency()) return;
  // Sleeps of tens of microseconds (on a rank of another host, which cannot ring) would otherwise last
  // the default timer slack (50 us) longer.
  prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
  const int host_rank = comm_rank(host.get());
  // The counter of working ranks in a cache line of its own, then each rank's doorbell in one of its own.
  static_assert(std::atomic<int>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
                "the words are shared between processes");
  static_assert(sizeof(Doorbell) == 64, "a doorbell per cache line");
  // One cache line more: MPI aligns the window less than a cache line, so the lines start at the first
  // 64-byte boundary in it (the same offset in every process: the segment is mapped page-aligned in each).
  const auto window_bytes = static_cast<MPI_Aint>(sizeof(Doorbell) * (2 + static_cast<std::size_t>(host_ranks)));
  void* base = nullptr;
  LPURT_MPI_CHECK(MPI_Win_allocate_shared(host_rank == 0 ? window_bytes : 0, 1, MPI_INFO_NULL, host.get(), &base,
                                          &host_.window));
  MPI_Aint size = 0;
  int unit = 0;
  LPURT_MPI_CHECK(MPI_Win_shared_query(host_.window, 0, &size, &unit, &base));
  const std::uintptr_t misalignment = reinterpret_cast<std::uintptr_t>(base) % alignof(Doorbell);
  auto* bytes = static_cast<unsigned char*>(base) + (misalignment == 0 ? 0 : alignof(Doorbell) - misalignment);
  if (host_rank == 0) {
    new (bytes) std::atomic<int>(host_ranks);
    for (int r = 0; r < host_ranks; ++r)
      new (bytes + sizeof(Doorbell) * (1 + static_cast<std::size_t>(r))) Doorbell{{0}, {Doorbell::awake}};
  }
  LPURT_MPI_CHECK(MPI_Barrier(host.get()));
  host_.busy_ranks = reinterpret_cast<std::atomic<int>*>(bytes);
  host_.doorbells = reinterpret_cast<Doorbell*>(bytes + sizeof(Doorbell));
  // Each rank of comm_ as a rank of this host (a local call: groups need no communication).
  MPI_Group world_group = MPI_GROUP_NULL, host_group = MPI_GROUP_NULL;
  LPURT_MPI_CHECK(MPI_Comm_group(comm_, &world_group));
  LPURT_MPI_CHECK(MPI_Comm_group(host.get(), &host_group));
  std::vector<int> ranks(static_cast<std::size_t>(n_ranks_));
  for (int r = 0; r < n_ranks_; ++r) ranks[static_cast<std::size_t>(r)] = r;
  host_.host_rank.assign(static_cast<std::size_t>(n_ranks_), MPI_UNDEFINED);
  LPURT_MPI_CHECK(MPI_Group_translate_ranks(world_group, n_ranks_, ranks.data(), host_group, host_.host_rank.data()));
  LPURT_MPI_CHECK(MPI_Group_free(&world_group));
  LPURT_MPI_CHECK(MPI_Group_free(&host_group));
  for (int& r : host_.host_rank)
    if (r == MPI_UNDEFINED) r = -1;
  host_.every_rank_here = host_ranks == n_ranks_;
}

void Engine::ring(int rank) {
  if (host_.doorbells == nullptr) return;
  // The message just posted (or the completion just seen) must be visible before this rank reads whether
  // the peer sleeps; the peer marks itself asleep before its last test (a store-load pair on each side).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  auto ring_if = [&](int host_rank, int waiting_for) {
    Doorbell& bell = host_.doorbells[host_rank];
    if (bell.asleep.load(std::memory_order_seq_cst) != waiting_for) return;
    bell.rings.fetch_add(1, std::memory_order_seq_cst);
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&bell.rings), FUTEX_WAKE, 1, nullptr, nullptr, 0);
  };
  if (rank >= 0) {
    const int host_rank = host_.host_rank[static_cast<std::size_t>(rank)];
    if (host_rank >= 0) ring_if(host_rank, Doorbell::asleep_on_message_with + rank_);
    return;
  }
  for (int r = 0; r < n_ranks_; ++r) {
    const int host_rank = host_.host_rank[static_cast<std::size_t>(r)];
    if (r != rank_ && host_rank >= 0) ring_if(host_rank, Doorbell::asleep_in_reduction);
  }
}

tbb::task_arena& Engine::arena() {
  const int busy = host_.busy_ranks == nullptr ? 1 : std::max(1, host_.busy_ranks->load(std::memory_order_relaxed));
  const int cores = static_cast<int>(arenas_.size());
  return *arenas_[static_cast<std::size_t>(std::max(1, cores / busy) - 1)];
}

template <typename Polling, typename Stuck>
void Engine::await(MPI_Request& request, int peer, bool long_wait, Polling polling, Stuck stuck) {
  // A test of a message rings its peer; a test of a collective rings the host's ranks waiting in it only
  // when it completes the collective (they were rung when this rank joined it). Were every test to ring
  // them, two ranks waiting in one collective for a third would keep each other awake.
  int done = 0;
  auto ring_after_test = [&] {
    if (peer >= 0 || done != 0) ring(peer);
  };
  LPURT_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
  ring_after_test();
  if (done != 0) return;
  // A tensor-parallel peer's next round arrives within a round's compute (tens to hundreds of
  // microseconds): poll that long before counting this rank idle, so that the ranks of a stage never
  // both widen their threads. A pipeline stage waits for the others' whole compute: it counts itself idle
  // at once, so that the working stage gets every core from its first op, and soon sleeps. A sleeping
  // rank costs the working ones nothing: it wakes when it is rung, and then polls briefly, as the rest of
  // a protocol progresses only while it polls. Every test of a message rings the peer, which may sleep on
  // a step of the protocol this test has just made (a rendezvous's acknowledgement); a collective's inner
  // rounds progress while its ranks poll after the last one joins. What no one rings still wakes a rank
  // after a bounded sleep. A rank of another host cannot ring:
  // waiting for one, sleeps are short and grow to a cap that bounds the latency they add.
  constexpr std::chrono::microseconds poll_for_stage{20}, poll_for_peer{300}, poll_after_waking{50};
  constexpr long rung_sleep_ns = 200'000, first_unrung_sleep_ns = 10'000, longest_unrung_sleep_ns = 50'000;
  const auto t0 = std::chrono::steady_clock::now();
  auto poll_until = t0 + (long_wait ? poll_for_stage : poll_for_peer);
  Doorbell* bell =
      host_.doorbells == nullptr ? nullptr : &host_.doorbells[host_.host_rank[static_cast<std::size_t>(rank_)]];
  const int asleep = peer < 0 ? Doorbell::asleep_in_reduction : Doorbell::asleep_on_message_with + peer;
  const bool rung =
      bell != nullptr && (peer < 0 ? host_.every_rank_here : host_.host_rank[static_cast<std::size_t>(peer)] >= 0);
  long sleep_ns = rung ? rung_sleep_ns : first_unrung_sleep_ns;
  std::optional<tbb::global_control> workers_parked;  // while this rank sleeps, until the wait ends
  // Counted idle while waiting; the count is restored however the wait ends (stuck() and MPI errors throw).
  struct Idle {
    std::atomic<int>* busy_ranks;
    bool idle = false;
    void set() {
      if (!idle && busy_ranks != nullptr) busy_ranks->fetch_sub(1, std::memory_order_relaxed);
      idle = busy_ranks != nullptr;
    }
    ~Idle() {
      if (idle) busy_ranks->fetch_add(1, std::memory_order_relaxed);
    }
  } idle{bell == nullptr ? nullptr : host_.busy_ranks};
  if (long_wait) idle.set();
  auto test = [&](double waited_s) {
    polling(waited_s);
    LPURT_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    ring_after_test();
  };
  const auto add_wait = [&] {
    mpi_wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  while (done == 0) {
    const auto now = std::chrono::steady_clock::now();
    const double waited_s = std::chrono::duration<double>(now - t0).count();
    if (faults_.step_timeout_s > 0 && waited_s > faults_.step_timeout_s) {
      add_wait();
      stuck(waited_s);
    }
    if (bell == nullptr || now < poll_until) {
      std::this_thread::yield();
      test(waited_s);
      continue;
    }
    idle.set();
    // The ring count is read before the last test, and the store that says this rank sleeps is ordered
    // before that test's reads: a ring after either makes the futex wait return at once.
    const uint32_t rings = bell->rings.load(std::memory_order_seq_cst);
    bell->asleep.store(asleep, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    try {
      test(waited_s);
    } catch (...) {
      bell->asleep.store(Doorbell::awake, std::memory_order_seq_cst);
      throw;
    }
    if (done == 0) {
      // oneTBB's idle workers spin and yield for a while after their last task before they sleep; this
      // process's would take turns with the working ranks' threads on the cores (perf sched: ~40 context
      // switches a token each). Allowing one thread (this one) while it sleeps sends them to sleep now.
      if (!workers_parked) workers_parked.emplace(tbb::global_control::max_allowed_parallelism, 1);
      const timespec timeout{0, sleep_ns};
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(&bell->rings), FUTEX_WAIT, rings, &timeout, nullptr, 0);
      if (!rung) sleep_ns = std::min(2 * sleep_ns, longest_unrung_sleep_ns);
    }
    bell->asleep.store(Doorbell::awake, std::memory_order_seq_cst);
    if (bell->rings.load(std::memory_order_relaxed) != rings)
      poll_until = std::chrono::steady_clock::now() + poll_after_waking;
  }
  add_wait();
}

void Engine::allreduce(void* data, int count, MPI_Datatype type, MPI_Op op, const char* what) {
  MPI_Request request = MPI_REQUEST_NULL;
  LPURT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, count, type, op, comm_, &request));
  await_collective(request, what, "MPI_Iallreduce");
}

void Engine::await_collective(MPI_Request& request, const char* what, const char* call) {
  ring(-1);
  // A rank that times out here asks the others who is waiting too: answer while waiting.
  await(request, -1, true, [this](double) { answer_presence_notes(); },
        [&](double waited_s) { report_silent_ranks(what, call, waited_s); });
}

void Engine::send_presence_notes() {
  if (presence_sent_ || presence_tag_ < 0) return;
  presence_sent_ = true;
  for (int r = 0; r < n_ranks_; ++r)
    if (r != rank_)
      LPURT_MPI_CHECK(MPI_Isend(nullptr, 0, MPI_BYTE, r, presence_tag_, comm_, &presence_requests_[static_cast<std::size_t>(r)]));
}

void Engine::answer_presence_notes() {
  if (presence_tag_ < 0) return;
  for (;;) {
    int arrived = 0;
    MPI_Status status;
    LPURT_MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, presence_tag_, comm_, &arrived, &status));
    if (arrived == 0) return;
    LPURT_MPI_CHECK(MPI_Recv(nullptr, 0, MPI_BYTE, status.MPI_SOURCE, presence_tag_, comm_, MPI_STATUS_IGNORE));
    present_[static_cast<std::size_t>(status.MPI_SOURCE)] = true;
    send_presence_notes();  // a rank asks who is here: this one is
  }
}

void Engine::report_silent_ranks(const char* what, const char* call, double waited_s) {
  // Every rank waiting in the collective times out at about the same moment and tells the others; a rank
  // that has not said so within a grace period is the silent one.
  send_presence_notes();
  const double grace_s = std::min(1.0, faults_.step_timeout_s);
  const auto t0 = std::chrono::steady_clock::now();
  present_[static_cast<std::size_t>(rank_)] = true;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < grace_s &&
         std::count(present_.begin(), present_.end(), true) < n_ranks_) {
    answer_presence_notes();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::string silent;
  int n_silent = 0;
  for (int r = 0; r < n_ranks_; ++r)
    if (!present_[static_cast<std::size_t>(r)]) silent += (n_silent++ == 0 ? "" : ", ") + std::to_string(r);
  char seconds[32], limit[32];
  std::snprintf(seconds, sizeof seconds, "%.1f", waited_s);
  std::snprintf(limit, sizeof limit, "%.1f", faults_.step_timeout_s);
  throw Error("rank " + std::to_string(rank_) + " waited " + seconds + " s in the " + what + " (" + call + " over " +
                  std::to_string(n_ranks_) + " ranks) for " +
                  (presence_tag_ < 0 || n_silent == 0 ? std::string("another rank")
                                                      : (n_silent == 1 ? "rank " : "ranks ") + silent) +
                  ": " + (n_silent <= 1 || presence_tag_ < 0 ? "that rank is" : "they are") + " stuck or dead (step timeout " + limit +
                  " s, --step-timeout)",
              ExitCode::runtime);
}

const partition::Program& Engine::program(int64_t n_tokens) {
  auto it = programs_.find(n_tokens);
  if (it == programs_.end())
    it = programs_
             .emplace(n_tokens, partition::build_program(plan_, topology_,
                                                         partition::prefill_blocks(n_tokens, plan_.shape.block_tokens)))
             .first;
  return it->second;
}

const Exchange& Engine::exchange(int64_t n_tokens, int64_t replica) {
  const auto key = std::make_pair(n_tokens, replica);
  auto it = exchanges_.find(key);
  if (it != exchanges_.end()) return it->second;
  Exchange built = build_exchange(program(n_tokens), owner_, replica * plan_.chips_per_replica(), rank_, trailer_bytes_);
  for (const Message& m : built.messages)
    if (!timing_only_ && m.bytes > std::numeric_limits<int>::max())  // timing-only messages carry no bytes
      throw Error("a block of " + std::to_string(n_tokens) + " tokens sends " + std::to_string(m.bytes) +
                      " bytes from one rank to another in one round, more than one MPI message holds (2^31 - 1): "
                      "use a smaller --block-tokens",
                  ExitCode::config);
  const Exchange& e = exchanges_.emplace(key, std::move(built)).first->second;
  for (int area = 0; area < 2 && !timing_only_; ++area) {
    if (outgoing_[area].size() < static_cast<std::size_t>(e.max_outgoing_bytes))
      outgoing_[area].resize(static_cast<std::size_t>(e.max_outgoing_bytes));
    if (incoming_[area].size() < static_cast<std::size_t>(e.max_incoming_bytes))
      incoming_[area].resize(static_cast<std::size_t>(e.max_incoming_bytes));
  }
  if (requests_.size() < e.messages.size()) {
    requests_.reserve_at_least(e.messages.size());
    message_area_.resize(e.messages.size(), 0);
  }
  return e;
}

void Engine::forward(int64_t sequence, const int32_t* tokens, int64_t pos, int64_t n, float* logits) {
  const chip::ModelConfig& cfg = plan_.model;
  if (sequence < 0 || sequence >= plan_.batch)
    throw Error("sequence " + std::to_string(sequence) + " is outside the batch of " + std::to_string(plan_.batch),
                ExitCode::usage);
  const int64_t replica = plan_.replica_of(sequence), slot = plan_.slot_of(sequence);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg.vocab_size)
      throw Error("token " + std::to_string(tokens[i]) + " at position " + std::to_string(pos + i) +
                      " is outside the vocabulary [0, " + std::to_string(cfg.vocab_size) + ")",
                  ExitCode::usage);
  if (pos + n > plan_.shape.context)
    throw chip::CapacityError("positions up to " + std::to_string(pos + n) + " exceed the KV-cache context of " +
                              std::to_string(plan_.shape.context));
  const partition::Program& p = program(n);
  const Exchange& e = exchange(n, replica);
  for (attempt_ = 0;; ++attempt_) {
    step_faults_ = 0;
    first_fault_send_ = std::numeric_limits<int64_t>::max();
    execute(p, e, replica, slot, tokens, pos);
    if (!faults_.checked()) break;
    // Every rank must take the same decision: replay if any chip saw a corrupted transfer.
    int64_t faults = step_faults_;
    if (n_ranks_ > 1) allreduce(&faults, 1, MPI_INT64_T, MPI_SUM, "link-fault agreement");
    if (faults == 0) break;
    link_faults_detected_ += faults;
    if (attempt_ == faults_.max_replays) {
      int64_t first_send = first_fault_send_;
      if (n_ranks_ > 1) allreduce(&first_send, 1, MPI_INT64_T, MPI_MIN, "link-fault agreement");
      const Op& op = p.ops[static_cast<std::size_t>(first_send)];
      throw AgreedError("transfers arrived corrupted in each of " + std::to_string(attempt_ + 1) +
                            " attempts at positions " + std::to_string(pos) + ".." + std::to_string(pos + n - 1) +
                            " (--max-replays " + std::to_string(faults_.max_replays) + "); in the last attempt " +
                            std::to_string(faults) + " transfer(s) were corrupted, the first from chip " +
                            std::to_string(op.chip + replica * plan_.chips_per_replica()) + " to chip " +
                            std::to_string(op.peer + replica * plan_.chips_per_replica()) + " (" +
                            partition::payload_name(op.payload) + ", " + std::to_string(op.bytes) + " bytes" +
                            (op.layer >= 0 ? ", layer " + std::to_string(op.layer) : std::string()) +
                            "): the links cannot deliver this token",
                        ExitCode::runtime, rank_);
    }
    ++replays_;
    // The replay's modelled cost is its replica's program; replicas differ only with slowed chips or links.
    const partition::Program own = plan_.hardware.uniform() || replica == 0 ? partition::Program{}
        : partition::build_program(plan_, topology_, partition::prefill_blocks(n, plan_.shape.block_tokens, replica));
    const partition::Program& timed = own.ops.empty() ? p : own;
    const partition::Timeline t = partition::compute_timeline(timed, plan_, pos);
    replay_cycles_ += n == 1 ? partition::decode_period_cycles(plan_, timed, t) : t.makespan_cycles;
  }
  ++forward_calls_;
  if (logits == nullptr || timing_only_) return;
  // Logits leave the last stage for the host: each chip's vocabulary slice, gathered in place on every rank
  // (a copy: exact). Only the ranks of the last stage send; the others receive what they hold, and no rank
  // waits for a sum of the whole vocabulary from every rank.
  for (LocalChip& c : chips_) {
    if (plan_.chips[static_cast<std::size_t>(&c - chips_.data() + first_local_chip_)].replica != replica) continue;
    const chip::ShardRange& r = c.shard->range();
    if (r.n_vocab() > 0) std::copy(c.shard->logits_out(), c.shard->logits_out() + r.n_vocab(), logits + r.vocab_begin);
  }
  if (n_ranks_ == 1) return;
  MPI_Request request = MPI_REQUEST_NULL;
  LPURT_MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, logits, logits_counts_[static_cast<std::size_t>(replica)].data(),
                                  logits_offsets_[static_cast<std::size_t>(replica)].data(), MPI_FLOAT, comm_, &request));
  await_collective(request, "logits gather", "MPI_Iallgatherv");
}

void Engine::copy_ffn_hand_off(LocalChip& c, int64_t n, int64_t x_begin, int64_t x_count, bool pack) {
  chip::Shard& s = *c.shard;
  const chip::ModelConfig& cfg = plan_.model;
  // The amax is the stage's: gathered by the engine with tp > 1, the chip's own with one chip a stage.
  const bool moe = cfg.is_moe();
  float* amax = plan_.tp > 1 ? c.amax.data() : moe ? s.moe_amax_buffer() : s.amax_buffer();
  // In chip::ffn_hand_off_values's order, 4-byte values each (the experts' int32 copied as they are).
  const int64_t slots = n * cfg.n_experts_per_token;
  void* pieces[5] = {c.x.data() + x_begin};
  int64_t counts[5] = {x_count};
  int n_pieces = 1;
  auto piece = [&](void* data, int64_t count) { pieces[n_pieces] = data, counts[n_pieces++] = count; };
  if (moe) {
    piece(s.moe_chosen_buffer(), slots);
    piece(s.moe_weight_buffer(), slots);
    piece(amax, slots);
  }
  piece(s.ffn_act_buffer(), chip::ffn_hand_off_values(cfg, s.range(), n) - (moe ? 3 * slots : n));
  if (!moe) piece(amax, n);
  float* packed = c.hand_off.data();
  for (int k = 0; k < n_pieces; ++k) {
    const auto bytes = static_cast<std::size_t>(counts[k]) * sizeof(float);
    if (pack) std::memcpy(packed, pieces[k], bytes);
    else std::memcpy(pieces[k], packed, bytes);
    packed += counts[k];
  }
  if (moe && !pack) s.place_moe_slots(n);
}

void Engine::arrived(const Op& recv, LocalChip& c) {
  if (recv.payload != Payload::activations_ffn_share) return;
  // Unpacked at once: the stage's all-gather forwards the activations' range before w_down runs.
  const int64_t n = current_->blocks[static_cast<std::size_t>(recv.block)].n_tokens;
  copy_ffn_hand_off(c, n, recv.elem_begin,
                    recv.elem_count - chip::ffn_hand_off_values(plan_.model, c.shard->range(), n), false);
}

void* Engine::payload_at(const Op& op, LocalChip& c, bool sending) {
  const auto begin = static_cast<std::size_t>(op.elem_begin);
  // Collective transfers: received into the slot of the sender's position in the step's group. A
  // reduce-scatter step after the first forwards the sender's running sums (not its own partials), and an
  // amax step after the first the running max.
  const bool amax = op.payload == Payload::amax || op.payload == Payload::moe_amax;
  std::size_t slot = 0;
  if (!sending && op.collective >= 0) {
    const partition::Collective& coll = current_->collectives[static_cast<std::size_t>(op.collective)];
    const int64_t sender = plan_.chips[static_cast<std::size_t>(op.peer)].tp_rank;
    const int64_t stride = amax ? plan_.shape.block_tokens * amax_per_token(plan_.model) : coll.max_share(op.step);
    slot = static_cast<std::size_t>(coll.position(op.step, sender) * stride);
  }
  const bool forwarded = sending && op.step > 0;
  switch (op.payload) {
    case Payload::amax:
      if (sending) return forwarded ? c.amax.data() : const_cast<float*>(c.shard->amax());
      return c.peer_amax.data() + slot;
    case Payload::moe_amax:
      if (sending) return forwarded ? c.amax.data() : const_cast<float*>(c.shard->moe_amax());
      return c.peer_amax.data() + slot;
    case Payload::partial_sums:
      if (sending) return forwarded ? c.sums.data() + begin : const_cast<int32_t*>(c.shard->partial_sums()) + begin;
      return c.rs_sums.data() + slot;
    case Payload::embedding_partial:
      return sending ? c.x.data() + begin : c.rs_floats.data() + slot;
    case Payload::reduced_sums: return c.sums.data() + begin;
    case Payload::embedding_reduced: return c.x.data() + begin;
    case Payload::activations:
    case Payload::activations_share:
    case Payload::activations_gathered: return c.x.data() + begin;
    case Payload::activations_ffn:
    case Payload::activations_ffn_share:
      // Packed here at the send from the chip's activations (or their range), SiLU output and amax; the
      // receiver's w_down op unpacks a whole hand-off, arrived() a split one.
      if (sending) {
        const int64_t n = current_->blocks[static_cast<std::size_t>(op.block)].n_tokens;
        copy_ffn_hand_off(c, n, op.elem_begin,
                          op.elem_count - chip::ffn_hand_off_values(plan_.model, c.shard->range(), n), true);
      }
      return c.hand_off.data();
    case Payload::moe_partial:
      // The expert slots' int32 sums are summed in place in the shard, so running sums go from there too.
      return sending ? c.shard->moe_sums() + begin : c.rs_sums.data() + slot;
    case Payload::moe_reduced: return c.shard->moe_sums() + begin;
    case Payload::none: break;
  }
  LPURT_ASSERT(false);
}

void Engine::post_round(int32_t round) {
  const Round& r = exchange_->rounds[static_cast<std::size_t>(round)];
  const int area = round % 2;
  if (area_round_[area] >= 0) complete_round(area_round_[area]);
  area_round_[area] = round;
  // Outgoing messages come first: a rank sends all of a round before it can wait for anything.
  for (int32_t m = r.message_begin; m < r.message_begin + r.message_count; ++m) {
    const Message& msg = exchange_->messages[static_cast<std::size_t>(m)];
    unsigned char* data = timing_only_ ? nullptr : (msg.incoming ? incoming_ : outgoing_)[area].data() + msg.offset_bytes;
    for (int32_t k = msg.segment_begin; k < msg.segment_begin + msg.segment_count; ++k) {
      const Segment& seg = exchange_->segments[static_cast<std::size_t>(k)];
      const Op& op = current_->ops[static_cast<std::size_t>(seg.op)];
      LocalChip& c = *local(op.chip + current_offset_);
      if (msg.incoming) {
        if (c.pending_messages.empty() || c.pending_messages.back() != m) c.pending_messages.push_back(m);
      } else if (!timing_only_) {
        // The payload is a compute op's output; a chip's received data is unpacked before it computes.
        wait(c);
        const void* src = payload_at(op, c, true);
        std::memcpy(data + seg.offset_bytes, src, static_cast<std::size_t>(op.bytes));
        if (trailer_bytes_ > 0) {
          const uint64_t sum = checksum(src, op.bytes);
          std::memcpy(data + seg.offset_bytes + op.bytes, &sum, sizeof sum);
        }
      }
    }
    const int count = static_cast<int>(msg.bytes);
    MPI_Request& request = requests_[static_cast<std::size_t>(m)];
    if (msg.incoming) {
      LPURT_MPI_CHECK(MPI_Irecv(data, timing_only_ ? 0 : count, MPI_BYTE, msg.peer_rank, msg.tag, comm_, &request));
      ring(msg.peer_rank);  // a rendezvous whose header came first is acknowledged here
    } else {
      LPURT_MPI_CHECK(MPI_Isend(data, timing_only_ ? 0 : count, MPI_BYTE, msg.peer_rank, msg.tag, comm_, &request));
      ring(msg.peer_rank);
    }
    message_area_[static_cast<std::size_t>(m)] = static_cast<int8_t>(1 + area);
  }
}

void Engine::complete(int32_t m) {
  const auto mi = static_cast<std::size_t>(m);
  if (message_area_[mi] == 0) return;
  // Activations travel between pipeline stages: the receiver waits for the sender's whole compute, and
  // the sender, done with its stage, for the next one to take them. The other payloads go between the
  // tensor-parallel chips of a stage, working at the same time.
  const Message& msg = exchange_->messages[mi];
  const Op& first = current_->ops[static_cast<std::size_t>(exchange_->segments[static_cast<std::size_t>(msg.segment_begin)].op)];
  // A rank that waits as long as half the step timeout answers the presence notes of ranks timing out in
  // a collective (report_silent_ranks), so that they do not count it among the stuck.
  await(requests_[mi], msg.peer_rank, partition::between_stages(first.payload),
        [this](double waited_s) {
          if (faults_.step_timeout_s > 0 && waited_s > 0.5 * faults_.step_timeout_s) answer_presence_notes();
        },
        [&](double waited_s) { report_stuck(m, waited_s); });
  const int area = message_area_[mi] - 1;
  message_area_[mi] = 0;
  if (!msg.incoming) return;
  const unsigned char* data = timing_only_ ? nullptr : incoming_[area].data() + msg.offset_bytes;
  for (int32_t k = msg.segment_begin; k < msg.segment_begin + msg.segment_count; ++k) {
    const Segment& seg = exchange_->segments[static_cast<std::size_t>(k)];
    const Op& op = current_->ops[static_cast<std::size_t>(seg.op)];
    if (timing_only_) {
      if (faults_.checked()) check_arrival(static_cast<std::size_t>(seg.op), nullptr, 0, 0);
      continue;
    }
    LocalChip& receiver = *local(op.chip + current_offset_);
    void* dst = payload_at(op, receiver, false);
    std::memcpy(dst, data + seg.offset_bytes, static_cast<std::size_t>(op.bytes));
    if (trailer_bytes_ > 0) {
      uint64_t sum;
      std::memcpy(&sum, data + seg.offset_bytes + op.bytes, sizeof sum);
      check_arrival(static_cast<std::size_t>(seg.op), dst, op.bytes, sum);
    }
    arrived(op, receiver);
  }
}

void Engine::complete_round(int32_t round) {
  const Round& r = exchange_->rounds[static_cast<std::size_t>(round)];
  for (int32_t m = r.message_begin; m < r.message_begin + r.message_count; ++m) complete(m);
}

void Engine::wait(LocalChip& c) {
  for (const int32_t m : c.pending_messages) complete(m);
  c.pending_messages.clear();
}

bool Engine::link_fault(int64_t send_index) const {
  const Op& send = current_->ops[static_cast<std::size_t>(send_index)];
  for (const LinkFault& f : faults_.link_faults)
    if (attempt_ == 0 && f.call == forward_calls_ && f.from == send.chip + current_offset_ &&
        f.to == send.peer + current_offset_)
      return true;
  if (faults_.link_error_rate == 0) return false;
  const uint64_t draw = mix(mix(mix(mix(faults_.link_error_seed) ^ static_cast<uint64_t>(forward_calls_)) ^
                                static_cast<uint64_t>(attempt_)) ^
                            static_cast<uint64_t>(current_offset_ * 1'000'003 + send_index));
  return static_cast<double>(draw >> 11) * 0x1.0p-53 < faults_.link_error_rate;
}

void Engine::check_arrival(std::size_t recv_index, void* data, int64_t bytes, uint64_t sent_checksum) {
  const Op& recv = current_->ops[recv_index];
  const bool fault = link_fault(recv.match);
  if (timing_only_) {
    // No payload: the draw is the corruption the checksum would have caught.
    if (!fault) return;
  } else {
    if (fault && bytes > 0) {
      const uint64_t where = mix(static_cast<uint64_t>(recv.match) ^ mix(static_cast<uint64_t>(attempt_)));
      static_cast<unsigned char*>(data)[where % static_cast<uint64_t>(bytes)] ^=
          static_cast<unsigned char>(1u << ((where >> 32) % 8));
    }
    if (checksum(data, bytes) == sent_checksum) return;
  }
  ++step_faults_;
  first_fault_send_ = std::min<int64_t>(first_fault_send_, recv.match);
}

void Engine::report_stuck(int32_t m, double waited_s) {
  const Message& msg = exchange_->messages[static_cast<std::size_t>(m)];
  const Op& op = current_->ops[static_cast<std::size_t>(exchange_->segments[static_cast<std::size_t>(msg.segment_begin)].op)];
  const int64_t chip = op.chip + current_offset_, peer = op.peer + current_offset_;
  char seconds[32], limit[32];
  std::snprintf(seconds, sizeof seconds, "%.1f", waited_s);
  std::snprintf(limit, sizeof limit, "%.1f", faults_.step_timeout_s);
  throw Error("chip " + std::to_string(chip) + " on rank " + std::to_string(rank_) + " waited " + seconds + " s for " +
                  (msg.incoming ? "a transfer from" : "its transfer to") + " chip " + std::to_string(peer) +
                  " on rank " + std::to_string(msg.peer_rank) + " (" + partition::payload_name(op.payload) + ", " +
                  std::to_string(op.bytes) + " bytes" +
                  (op.layer >= 0 ? ", layer " + std::to_string(op.layer) : std::string()) +
                  (msg.segment_count > 1 ? ", with " + std::to_string(msg.segment_count - 1) + " more in its message" : std::string()) +
                  "): that rank is stuck or dead (step timeout " + limit + " s, --step-timeout)",
              ExitCode::runtime);
}

void Engine::execute(const partition::Program& p, const Exchange& e, int64_t replica, int64_t slot,
                     const int32_t* tokens, int64_t pos) {
  const int64_t offset = replica * plan_.chips_per_replica();
  current_ = &p;
  exchange_ = &e;
  current_offset_ = offset;
  if (rank_ == faults_.crash_rank) std::raise(SIGKILL);  // injected: this rank dies
  // Injected: a call MPI itself rejects (a negative count), so the drill exercises MPI's error path.
  if (rank_ == faults_.mpi_error_rank) LPURT_MPI_CHECK(MPI_Send(nullptr, -1, MPI_BYTE, rank_, 0, comm_));
  while (rank_ == faults_.stall_rank) std::this_thread::sleep_for(std::chrono::seconds(1));  // injected: stuck
  // Without payloads, a rank's only work in a step is its messages and the fault draws: with neither,
  // the step has nothing to do here (a timing-only run on one rank costs no time per token).
  if (timing_only_ && e.messages.empty() && !faults_.checked()) return;
  std::size_t next_round = 0;
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    while (next_round < e.rounds.size() && static_cast<std::size_t>(e.rounds[next_round].first_op) <= i)
      post_round(static_cast<int32_t>(next_round++));
    const Op& op = p.ops[i];
    LocalChip* c = local(op.chip + offset);
    if (c == nullptr) continue;
    if (op.kind == OpKind::recv) continue;  // copied at its send, or in a message
    if (op.kind == OpKind::send) {
      LocalChip* receiver = local(op.peer + offset);
      if (receiver == nullptr) continue;  // in a message
      const bool checked = faults_.checked();
      if (timing_only_) {
        if (checked) check_arrival(static_cast<std::size_t>(op.match), nullptr, 0, 0);
        continue;
      }
      wait(*c);  // as for a packed send: what the chip received is unpacked before it is read
      const void* src = payload_at(op, *c, true);
      void* dst = payload_at(p.ops[static_cast<std::size_t>(op.match)], *receiver, false);
      std::memcpy(dst, src, static_cast<std::size_t>(op.bytes));
      if (checked) check_arrival(static_cast<std::size_t>(op.match), dst, op.bytes, checksum(src, op.bytes));
      arrived(p.ops[static_cast<std::size_t>(op.match)], *receiver);
    } else if (timing_only_) {
      wait(*c);
    } else {
      // Compute ops of different chips of this rank with no transfer of this rank between them exchange
      // no data (chips share data only through transfers): they run at once, each kernel still split
      // over the cores. Results do not depend on it: every chip's arithmetic is its own.
      parallel_group_.assign(1, static_cast<int32_t>(i));
      for (std::size_t j = i + 1; j < p.ops.size() && parallel_group_.size() < chips_.size(); ++j) {
        const Op& next = p.ops[j];
        if (local(next.chip + offset) == nullptr) continue;  // another rank's op: nothing to do here
        if (next.kind == OpKind::send || next.kind == OpKind::recv) break;
        const bool same_chip = std::any_of(parallel_group_.begin(), parallel_group_.end(), [&](int32_t k) {
          return p.ops[static_cast<std::size_t>(k)].chip == next.chip;
        });
        if (same_chip) break;
        parallel_group_.push_back(static_cast<int32_t>(j));
      }
      for (const int32_t k : parallel_group_) wait(*local(p.ops[static_cast<std::size_t>(k)].chip + offset));
      auto run = [&](int32_t k) {
        const Op& o = p.ops[static_cast<std::size_t>(k)];
        const partition::Block& b = p.blocks[static_cast<std::size_t>(o.block)];
        compute(o, *local(o.chip + offset), tokens + b.position_offset, slot, pos + b.position_offset, b.n_tokens);
      };
      arena().execute([&] {
        if (parallel_group_.size() == 1) {
          run(parallel_group_.front());
        } else {
          tbb::parallel_for(std::size_t{0}, parallel_group_.size(), [&](std::size_t g) { run(parallel_group_[g]); });
        }
      });
      i = static_cast<std::size_t>(parallel_group_.back());
    }
  }
  for (int32_t& round : area_round_) {
    if (round >= 0) complete_round(round);
    round = -1;
  }
  for (LocalChip& c : chips_) c.pending_messages.clear();
}

void Engine::compute(const Op& op, LocalChip& c, const int32_t* tokens, int64_t slot, int64_t pos, int64_t n) {
  chip::Shard& s = *c.shard;
  const int64_t d = plan_.model.hidden_size;
  const bool split = plan_.tp > 1;
  const float* amax = split ? c.amax.data() : s.amax();
  const int32_t* sums = split ? c.sums.data() : s.partial_sums();
  switch (op.kind) {
    case OpKind::embed: {
      const chip::ShardRange& r = s.range();
      // Rows of tokens another chip holds stay -0.0, the identity of the reduce-scatter's float sum.
      if (split) std::fill(c.x.begin(), c.x.begin() + n * d, -0.0f);
      for (int64_t t = 0; t < n; ++t)
        if (tokens[t] >= r.embed_begin && tokens[t] < r.embed_end) s.embed(tokens + t, 1, c.x.data() + t * d);
      break;
    }
    case OpKind::attention: s.attention_in(slot, op.layer, pos, n, c.x.data()); break;
    case OpKind::silu: s.ffn_in(op.layer, n, c.x.data()); break;
    case OpKind::reduce_max: {
      // The max over this step's group, starting from the chip's own amax (step 0) or the running max: per
      // token, or in an MoE layer per token and chosen expert ([n] or [n, k] values).
      const partition::Collective& coll = current_->collectives[static_cast<std::size_t>(op.collective)];
      const int64_t me = coll.position(op.step, plan_.chips[static_cast<std::size_t>(op.chip)].tp_rank);
      const bool moe = op.payload == Payload::moe_amax;
      const int64_t values = n * (moe ? plan_.model.n_experts_per_token : 1);
      const int64_t stride = plan_.shape.block_tokens * amax_per_token(plan_.model);
      if (op.step == 0) {
        const float* own = moe ? s.moe_amax() : s.amax();
        std::copy(own, own + values, c.amax.begin());
      }
      for (int64_t q = 0; q < coll.group_size(op.step); ++q) {
        if (q == me) continue;
        const float* peer = c.peer_amax.data() + q * stride;
        for (int64_t k = 0; k < values; ++k) c.amax[static_cast<std::size_t>(k)] = std::max(c.amax[static_cast<std::size_t>(k)], peer[k]);
      }
      break;
    }
    case OpKind::wo: s.attention_out_partial(op.layer, n, amax); break;
    case OpKind::down:
      // The stage begins at this FFN's output half: what the previous stage's input half left arrived.
      if (op.payload == Payload::activations_ffn) copy_ffn_hand_off(c, n, 0, n * d, false);
      s.ffn_out_partial(op.layer, n, amax);
      break;
    case OpKind::reduce_sum: {
      // After this step the chip owns [begin, end) of the flat array summed over the step's group (and the
      // steps before): add the group's other ranges in group order.
      const partition::Collective& coll = current_->collectives[static_cast<std::size_t>(op.collective)];
      const int64_t member = plan_.chips[static_cast<std::size_t>(op.chip)].tp_rank;
      const int64_t me = coll.position(op.step, member), stride = coll.max_share(op.step);
      const int64_t begin = coll.begin(op.step, member), end = coll.end(op.step, member);
      if (op.payload == Payload::partial_sums || op.payload == Payload::moe_partial) {
        // int32 sums: a linear layer's partials, or the expert slots' (summed in place, in the shard).
        int32_t* target = op.payload == Payload::moe_partial ? s.moe_sums() : c.sums.data();
        if (op.payload == Payload::partial_sums && op.step == 0)
          std::copy(s.partial_sums() + begin, s.partial_sums() + end, c.sums.begin() + begin);
        for (int64_t t = 0; t < coll.group_size(op.step); ++t) {
          if (t == me) continue;
          const int32_t* in = c.rs_sums.data() + t * stride;
          // Modulo 2^32: exact for valid partials (each is bounded by its own slice of the dot product, so
          // any sum of them fits int32), and defined for a corrupted transfer awaiting its replay.
          for (int64_t k = begin; k < end; ++k)
            target[k] = static_cast<int32_t>(static_cast<uint32_t>(target[k]) + static_cast<uint32_t>(in[k - begin]));
        }
      } else {
        // Float slices with one holder per element (embedding rows): exact in any order.
        for (int64_t t = 0; t < coll.group_size(op.step); ++t) {
          if (t == me) continue;
          const float* in = c.rs_floats.data() + t * stride;
          for (int64_t k = begin; k < end; ++k) c.x[static_cast<std::size_t>(k)] += in[k - begin];
        }
      }
      break;
    }
    case OpKind::attn_residual: s.add_attention_output(op.layer, n, sums, amax, c.x.data()); break;
    case OpKind::ffn_residual:
      if (plan_.model.is_moe()) s.add_moe_output(op.layer, n, s.moe_sums(), split ? c.amax.data() : s.moe_amax(), c.x.data());
      else s.add_ffn_output(op.layer, n, sums, amax, c.x.data());
      break;
    case OpKind::moe_up: s.moe_in(op.layer, n, c.x.data()); break;
    case OpKind::moe_down:
      // The stage begins at this FFN's output half: what the previous stage's input half left arrived.
      if (op.payload == Payload::activations_ffn) copy_ffn_hand_off(c, n, 0, n * d, false);
      s.moe_out_partial(op.layer, n, split ? c.amax.data() : s.moe_amax());
      break;
    case OpKind::lm_head: s.logits(c.x.data() + (n - 1) * d); break;
    case OpKind::attn_norm:
    case OpKind::qkv:
    case OpKind::ffn_norm:
    case OpKind::gate_up:
    case OpKind::final_norm: break;  // modelled time only: computed inside the consuming phase
    case OpKind::send:
    case OpKind::recv: LPURT_ASSERT(false);
  }
}

}  // namespace lpurt::runtime
