#pragma once
/// \file
/// Executes the static schedule (partition/schedule.hpp) on MPI ranks. Chips are assigned to ranks in
/// contiguous blocks of chip order (stage-major, so a tensor-parallel group stays on one rank where the
/// counts allow). Each rank holds its chips' Shards, loads only their weight slices, and walks the
/// program's flat op array, doing the ops of its chips in array order:
/// - compute ops call the Shard's phases (ops that only model time, like qkv, do nothing here: the
///   phase that consumes them computes them);
/// - a transfer between chips on this rank is a copy into the receiver's buffer at the send;
/// - transfers between ranks travel in messages (runtime/exchange.hpp): at the first op of a round of
///   transfers, the rank packs its outgoing payloads, one MPI_Isend per peer rank, and posts one MPI_Irecv
///   per peer rank; a message is unpacked into its chips' buffers before the next compute op of a chip it
///   carries data for. Rounds use two staging areas in turn, so at most two rounds are in flight.
/// The array order is a valid execution order, so walking it on every rank cannot deadlock. The programs
/// and their messages are built once; the steady-state step allocates nothing.
///
/// Ranks of one host share its cores. A rank that waits for a message (or a collective) polls briefly, then
/// sleeps on its doorbell (a futex in memory the host's ranks share) until the rank it waits for rings it
/// (after posting a message or testing a request), and counts itself idle in a counter the host's ranks
/// share; each group of compute ops runs its kernels on cores / (ranks of the host working at that moment)
/// threads. A pipeline stage that works while the other stages wait gets the whole host; ranks that work
/// at once split it. (A rank counted idle still polls for up to 50 us before it sleeps, and a group keeps
/// the threads it started with: for such moments the threads may exceed the cores.) Ranks must be free to
/// use every core: `mpirun --bind-to none`; ranks bound to cores of their own keep to them and never sleep.
///
/// Example usage:
/// \code
///   lpurt::runtime::Engine engine(plan, *source, MPI_COMM_WORLD);
///   engine.forward(0, prompt.data(), 0, prompt.size(), logits.data());   // prefill, logits of the last token
///   engine.forward(0, &next, prompt.size(), 1, logits.data());           // one decode step
/// \endcode

#include <mpi.h>
#include <tbb/task_arena.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chip/error.hpp"
#include "chip/shard.hpp"
#include "io/weight_source.hpp"
#include "partition/plan.hpp"
#include "partition/schedule.hpp"
#include "partition/topology.hpp"
#include "runtime/exchange.hpp"
#include "runtime/mpi.hpp"

namespace lpurt::runtime {

/// An error every rank agreed on: raised on all ranks of a communicator with the message of the lowest
/// failing rank, so it is printed once and every rank exits with the same code.
class AgreedError : public Error {
 public:
  AgreedError(const std::string& message, ExitCode code, int origin_rank)
      : Error(message, code), origin_rank_(origin_rank) {}
  int origin_rank() const { return origin_rank_; }

 private:
  int origin_rank_;
};

/// One scripted link fault: every transfer from chip `from` to chip `to` in forward call `call` arrives
/// corrupted in its first attempt. Calls are counted over the whole run: with a batch of B sequences,
/// calls 0..B-1 are the prefills and decode step k is calls k x B .. k x B + B - 1 (for one sequence:
/// 0 is the prefill, k the k-th decode step).
struct LinkFault {
  int64_t from = 0;
  int64_t to = 0;
  int64_t call = 0;
};

/// Failure handling of an Engine: how long a chip may wait for a transfer, and injected faults (tests
/// and drills: a rank that stops participating, a rank that dies, a rank whose MPI call fails, chip-to-chip
/// links that corrupt data).
struct FaultOptions {
  double step_timeout_s = 60.0;  ///< a wait longer than this is reported (chip, transfer, peer) and fails; 0: never
  int stall_rank = -1;           ///< this rank stops participating at its first step
  int crash_rank = -1;           ///< this rank kills itself (SIGKILL) at its first step
  int mpi_error_rank = -1;       ///< this rank makes a failing MPI call (a send of -1 bytes) at its first step
  /// Probability that a transfer arrives corrupted (one flipped bit). Every transfer then carries a
  /// checksum; a mismatch replays the forward call (the token), as the production system does.
  double link_error_rate = 0;
  uint64_t link_error_seed = 1;  ///< which transfers fail: a pure function of seed, step, attempt and transfer
  int max_replays = 8;           ///< a token still corrupted after this many replays fails the run
  std::vector<LinkFault> link_faults;  ///< scripted faults, on top of the random ones (checksums as above)
  bool checked() const { return link_error_rate > 0 || !link_faults.empty(); }
};

class Engine {
 public:
  /// Allocates this rank's chips and loads their weights (only their slices). `comm` hosts the chips;
  /// every rank of it must construct the Engine with the same plan (collective).
  /// With `timing_only`, no chip state exists (no weights, no KV cache: `source` needs only the
  /// configuration), compute ops are skipped, and transfers between ranks are zero-byte messages with the
  /// same sources, destinations, tags and order as a functional run: the same message pattern, no payload.
  Engine(const partition::Plan& plan, io::WeightSource& source, MPI_Comm comm = MPI_COMM_SELF, bool timing_only = false,
         const FaultOptions& faults = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Rank that hosts `chip` when n_chips chips are spread over n_ranks ranks in contiguous blocks.
  static int rank_of_chip(int64_t chip, int64_t n_chips, int n_ranks);

  /// Feeds n tokens of `sequence` at positions [pos, pos + n), in blocks of the plan's block_tokens, on the
  /// sequence's replica and KV slot. If `logits` is not null, writes the logits of the last token there on
  /// every rank: float [vocab_size]. Collective over the Engine's communicator. After it throws, messages
  /// may still be in flight: the Engine is then only fit to be destroyed (every caller ends the job).
  void forward(int64_t sequence, const int32_t* tokens, int64_t pos, int64_t n, float* logits);

  const partition::Plan& plan() const { return plan_; }
  bool timing_only() const { return timing_only_; }
  /// Host seconds this rank spent waiting in MPI (transfers, the logits gather and the fault agreements) so far.
  double mpi_wait_s() const { return mpi_wait_s_; }
  /// Link faults: corrupted transfers detected (over all ranks and attempts), forward calls replayed, and
  /// the modelled time the replays cost (each replay runs its program again).
  int64_t link_faults_detected() const { return link_faults_detected_; }
  int64_t replays() const { return replays_; }
  int64_t replay_cycles() const { return replay_cycles_; }
  /// The program forward() runs for n tokens, built for replica 0 on first use and reused: replica r runs
  /// it with every chip offset by r x chips per replica (the replicas are identical pipelines).
  const partition::Program& program(int64_t n_tokens);
  /// Builds the program of n tokens and its messages for every replica now, at setup, rather
  /// than at the first forward call of that length (the constructor does it for decode). Throws Error if a
  /// round's message between two ranks exceeds what one MPI message holds.
  void prepare(int64_t n_tokens);

 private:
  /// A chip hosted on this rank: its Shard and the buffers its transfers read and write.
  struct LocalChip {
    std::unique_ptr<chip::Shard> shard;
    std::vector<float> x;            ///< [block, D] residual stream (replicated over the stage's chips)
    std::vector<float> amax;         ///< [block * max(1, k)] stage-wide per-token amax (MoE: per token and slot)
    /// [tp, block * max(1, k)] amax received in one collective step, by group position (MoE: per slot)
    std::vector<float> peer_amax;
    std::vector<int32_t> sums;       ///< [block * D] stage-wide int32 sums (reduce-scatter + all-gather)
    /// [receive_elements] int32 partial-sum ranges (linear outputs, expert slots) received in one
    /// reduce-scatter step: [group size, max share] of that step (partition::Collective::receive_elements),
    /// by the sender's group position
    std::vector<int32_t> rs_sums;
    std::vector<float> rs_floats;    ///< [receive_elements] the same for the embedding's float ranges
    std::vector<int32_t> pending_messages;  ///< incoming messages with data for this chip, not yet waited for
    /// [block * D + chip::ffn_hand_off_values(block)] the hand-off between stages cut inside an FFN
    /// (Payload::activations_ffn): activations (Payload::activations_ffn_share: their range), then the
    /// FFN input half's results (dense: SiLU output, amax; MoE: chosen experts, their weights, slot amax,
    /// held slots' SiLU rows). Empty unless the chip's stage begins or ends at an FFN's w_down half.
    std::vector<float> hand_off;
  };

  /// The messages of program(n_tokens) on `replica`, built on first use with their staging areas.
  const Exchange& exchange(int64_t n_tokens, int64_t replica);
  void execute(const partition::Program& program, const Exchange& exchange, int64_t replica, int64_t slot,
               const int32_t* tokens, int64_t pos);
  void compute(const partition::Op& op, LocalChip& c, const int32_t* tokens, int64_t slot, int64_t pos, int64_t n);
  /// Packs (or unpacks) chip c's hand-off of n tokens (Payload::activations_ffn, activations_ffn_share)
  /// from (into) its activations [x_begin, x_begin + x_count) and its FFN input half's results, at
  /// c.hand_off; an unpacked MoE routing places the held slots' rows (chip::Shard::place_moe_slots).
  void copy_ffn_hand_off(LocalChip& c, int64_t n, int64_t x_begin, int64_t x_count, bool pack);
  /// What a receive needs once its data is in place on chip c (a split hand-off into an FFN: unpacked).
  void arrived(const partition::Op& recv, LocalChip& c);
  /// Pointer to the payload elements an op (of the replica-0 program) sends from or receives into, on chip
  /// `c`. Sending an FFN hand-off packs it first (copy_ffn_hand_off), so call it once per send.
  void* payload_at(const partition::Op& op, LocalChip& c, bool sending);
  /// Packs and sends round `round`'s outgoing messages and posts its receives, in staging area round % 2
  /// (first completing the round that used it before).
  void post_round(int32_t round);
  /// Waits for message m of the current exchange; an incoming one is then unpacked and its checksums checked.
  void complete(int32_t m);
  void complete_round(int32_t round);
  /// Completes the incoming messages chip c's next compute op needs.
  void wait(LocalChip& c);
  /// Whether the link corrupts send `send_index` of the current program in this attempt.
  bool link_fault(int64_t send_index) const;
  /// A transfer has arrived in `data` (the receive op `recv_index`): apply the injected corruption, then
  /// compare with the sender's checksum; a mismatch is counted for the replay decision.
  void check_arrival(std::size_t recv_index, void* data, int64_t bytes, uint64_t sent_checksum);
  /// Throws Error naming the first transfer of message m, still incomplete after the step timeout.
  [[noreturn]] void report_stuck(int32_t m, double waited_s);
  /// Waits for `request` (a message with rank `peer`, or -1: a collective) without holding a core: polls
  /// for a while (a tensor-parallel peer's message usually follows soon), then, if this rank shares cores
  /// with other ranks of its host, sleeps on its doorbell until a rank rings it, counted idle on the host
  /// meanwhile, and polls again. A `long_wait` (another pipeline stage's output, a collective) counts idle
  /// at once and polls briefly. Each test of a message rings `peer`; joining a collective, and the test
  /// that completes it, ring the host's ranks asleep in one. Calls polling(seconds waited) before each poll
  /// but the first; past the step timeout it calls stuck(seconds waited), which throws. Adds the time to
  /// mpi_wait_s().
  template <typename Polling, typename Stuck>
  void await(MPI_Request& request, int peer, bool long_wait, Polling polling, Stuck stuck);
  /// MPI_Iallreduce in place over the Engine's communicator, awaited like a transfer; `what` names the
  /// reduction in the report of a rank that never joins it.
  void allreduce(void* data, int count, MPI_Datatype type, MPI_Op op, const char* what);
  /// Awaits a collective `request` over the Engine's communicator, just started by MPI function `call`.
  void await_collective(MPI_Request& request, const char* what, const char* call);
  /// Throws Error naming the ranks that did not join collective `what` (started by `call`) within the step
  /// timeout: the ranks waiting in it say so to each other (zero-byte notes, tag presence_tag); the others
  /// are silent.
  [[noreturn]] void report_silent_ranks(const char* what, const char* call, double waited_s);
  /// Answers presence notes while this rank waits in a reduction (see report_silent_ranks).
  void answer_presence_notes();
  /// Sends this rank's presence note to every other rank, once per reduction that timed out.
  void send_presence_notes();
  /// Sets up the host's shared counter of working ranks, its doorbell and the arenas (collective over comm_).
  void share_host();
  /// Rings the doorbell of rank `rank` if it shares this host and sleeps on a message with this rank;
  /// rank -1: of every other rank of the host asleep in a reduction.
  void ring(int rank);
  /// The arena to run compute ops in now: cores / (ranks of this host working at the moment) threads.
  tbb::task_arena& arena();
  LocalChip* local(int64_t chip) { return local_index_[static_cast<std::size_t>(chip)]; }

  partition::Plan plan_;
  partition::Topology topology_;
  MPI_Comm comm_ = MPI_COMM_SELF;
  int rank_ = 0;
  int n_ranks_ = 1;
  std::vector<LocalChip> chips_;               ///< this rank's chips, in chip order
  std::vector<LocalChip*> local_index_;        ///< [n_chips] -> this rank's chip, or null
  std::vector<int> owner_;                     ///< [n_chips] rank hosting each chip
  /// [replicas][n_ranks]: the elements of a replica's logits each rank holds, and where they begin (a
  /// rank's chips are consecutive and hold consecutive slices of the vocabulary): the gather's layout.
  std::vector<std::vector<int>> logits_counts_, logits_offsets_;
  std::map<int64_t, partition::Program> programs_;  ///< by tokens per forward call
  std::map<std::pair<int64_t, int64_t>, Exchange> exchanges_;  ///< by tokens per forward call and replica
  int64_t receive_elements_ = 0;               ///< rs_sums / rs_floats elements: bound over every algorithm and step
  bool timing_only_ = false;
  int64_t first_local_chip_ = 0;               ///< chips_[i] is chip first_local_chip_ + i
  double mpi_wait_s_ = 0;
  FaultOptions faults_;
  std::vector<int32_t> parallel_group_;          ///< [<= chips_] compute ops execute() runs at once
  const partition::Program* current_ = nullptr;  ///< the program execute() is walking
  const Exchange* exchange_ = nullptr;           ///< its messages
  int64_t current_offset_ = 0;                   ///< its replica's chip offset
  int64_t trailer_bytes_ = 0;                    ///< after each payload in a message: its checksum, with link errors
  std::vector<unsigned char> outgoing_[2];       ///< staging areas [max_outgoing_bytes of the exchanges]
  std::vector<unsigned char> incoming_[2];       ///< [max_incoming_bytes]
  int32_t area_round_[2] = {-1, -1};             ///< the round whose messages use each area, or -1
  // Declared after the staging areas: destroyed first, it cancels pending receives before their buffers go.
  Requests requests_;                            ///< [messages of the largest exchange] by message index
  std::vector<int8_t> message_area_;             ///< [messages]: 1 + its staging area while in flight, else 0
  // Link-fault injection (all unused while link_error_rate is 0).
  int64_t forward_calls_ = 0;                    ///< the step index of the fault draws
  int64_t attempt_ = 0;                          ///< replays of the current forward call so far
  int64_t step_faults_ = 0;                      ///< corrupted transfers this rank saw in this attempt
  int64_t first_fault_send_ = 0;                 ///< the lowest send op index among them
  int64_t link_faults_detected_ = 0;
  int64_t replays_ = 0;
  int64_t replay_cycles_ = 0;
  // Waiting and sharing the host's cores.
  /// A rank's doorbell, in memory the host's ranks share. A rank rings a peer's after posting a message
  /// to it and after each test of a request with it (the peer may wait for either), and every host rank's
  /// when it joins or tests a reduction; a waiting rank sleeps on its own (a futex on `rings`) until it is
  /// rung.
  struct alignas(64) Doorbell {
    /// `asleep` while its rank sleeps: in a reduction, or on a message with rank r (offset + r).
    static constexpr int awake = 0, asleep_in_reduction = 1, asleep_on_message_with = 2;
    std::atomic<uint32_t> rings;
    std::atomic<int> asleep;  ///< what its rank sleeps on: ringing costs a system call only when it matches
  };
  /// What the ranks of a host share: an MPI shared window of the host's ranks of comm_.
  struct HostShare {
    MPI_Win window = MPI_WIN_NULL;
    std::atomic<int>* busy_ranks = nullptr;  ///< ranks of the host not asleep in a wait; null: nothing shared
    Doorbell* doorbells = nullptr;           ///< [ranks of the host]
    std::vector<int> host_rank;              ///< [n_ranks] a rank's index on this host, or -1 (another host)
    bool every_rank_here = false;            ///< every rank of comm_ is on this host (all can ring)
    HostShare() = default;
    HostShare(const HostShare&) = delete;  // owns the window
    HostShare& operator=(const HostShare&) = delete;
    ~HostShare();
  };
  HostShare host_;
  std::vector<std::unique_ptr<tbb::task_arena>> arenas_;  ///< [cores]: arenas_[k] runs k + 1 threads
  int presence_tag_ = -1;                        ///< tag of presence notes, above every round's; -1: not available
  bool presence_sent_ = false;                   ///< this rank's presence notes are out (a reduction timed out)
  std::vector<bool> present_;                    ///< [n_ranks] ranks heard from in a timed-out reduction
  std::vector<MPI_Request> presence_requests_;   ///< [n_ranks] this rank's presence notes in flight
};

}  // namespace lpurt::runtime
