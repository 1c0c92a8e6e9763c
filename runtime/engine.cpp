#include "runtime/engine.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>
#include <cstring>

#include <tbb/parallel_for.h>

#include "chip/error.hpp"
#include "partition/timing.hpp"

namespace lpurt::runtime {

using partition::Op;
using partition::OpKind;
using partition::Payload;

namespace {

/// A failed MPI call during a run: the message names the call and the rank.
void check_mpi(int status, const char* call, int rank) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(status, text, &length);
  throw Error(std::string(call) + " failed on rank " + std::to_string(rank) + ": " +
                  std::string(text, static_cast<std::size_t>(length)),
              ExitCode::runtime);
}

/// MPI guarantees tags up to 32767; messages between one pair keep their order, so reuse is safe.
int tag_of(int64_t send_index) { return static_cast<int>(send_index % 32768); }

/// splitmix64: a well-mixed 64-bit function of its input (the fault draws and the checksum rounds).
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

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
  int mpi_initialized = 0;
  MPI_Initialized(&mpi_initialized);
  if (mpi_initialized) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &n_ranks_);
  }
  if (n_ranks_ > plan.n_chips())
    throw Error(std::to_string(n_ranks_) + " MPI ranks for " + std::to_string(plan.n_chips()) +
                    " chips: every rank must host at least one chip",
                ExitCode::config);
  if (!(faults.link_error_rate >= 0 && faults.link_error_rate <= 1))
    throw Error("--inject-link-errors must be a probability in [0, 1]", ExitCode::usage);
  if (faults.max_replays < 0) throw Error("--max-replays must be at least 0", ExitCode::usage);
  const int64_t b = plan.shape.block_tokens, d = cfg.hidden_size, tp = plan.tp;
  // The largest reduce-scatter slice: a block's expert slots (or its activations) over the stage's chips.
  slice_ = chip::ceil_div(b * d * std::max<int64_t>(1, cfg.n_experts_per_token), tp);
  owner_.resize(static_cast<std::size_t>(plan.n_chips()));
  std::size_t n_local = 0;
  for (const auto& c : plan.chips) {
    owner_[static_cast<std::size_t>(c.chip)] = rank_of_chip(c.chip, plan.n_chips(), n_ranks_);
    n_local += owner_[static_cast<std::size_t>(c.chip)] == rank_ ? 1 : 0;
  }
  chips_.resize(n_local);  // never resized again: local_index_ points into it
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
    lc.pending.reserve(static_cast<std::size_t>(8 * tp + 8));  // with checksums: two requests a transfer
    lc.to_verify.reserve(static_cast<std::size_t>(4 * tp + 4));
    lc.pending_ops.reserve(lc.pending.capacity());
    if (timing_only) continue;
    lc.shard = std::make_unique<chip::Shard>(cfg, c.range, plan.shape);
    io::load_shard(source, *lc.shard);
    lc.x.assign(static_cast<std::size_t>(b * d), 0.0f);
    lc.amax.assign(static_cast<std::size_t>(b), 0.0f);
    lc.peer_amax.assign(static_cast<std::size_t>(tp * b), 0.0f);
    lc.sums.assign(static_cast<std::size_t>(b * d), 0);
    lc.rs_sums.assign(static_cast<std::size_t>(tp * slice_), 0);
    lc.rs_floats.assign(static_cast<std::size_t>(tp * slice_), 0.0f);
  }
  parallel_group_.reserve(chips_.size());
  program(1);  // the decode program, before step 0
}

Engine::~Engine() {
  if (checksum_comm_ != MPI_COMM_NULL) MPI_Comm_free(&checksum_comm_);
}

const partition::Program& Engine::program(int64_t n_tokens) {
  auto it = programs_.find(n_tokens);
  if (it == programs_.end())
    it = programs_
             .emplace(n_tokens, partition::build_program(plan_, topology_,
                                                         partition::prefill_blocks(n_tokens, plan_.shape.block_tokens)))
             .first;
  if (faults_.link_error_rate > 0 && it->second.ops.size() > sent_checksums_.size()) {
    sent_checksums_.resize(it->second.ops.size());
    received_checksums_.resize(it->second.ops.size());
  }
  return it->second;
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
  // Created here, not in the constructor: the setup every rank agrees on must make no collective call.
  if (faults_.link_error_rate > 0 && n_ranks_ > 1 && checksum_comm_ == MPI_COMM_NULL)
    check_mpi(MPI_Comm_dup(comm_, &checksum_comm_), "MPI_Comm_dup", rank_);
  for (attempt_ = 0;; ++attempt_) {
    step_faults_ = 0;
    first_fault_send_ = std::numeric_limits<int64_t>::max();
    execute(p, replica, slot, tokens, pos);
    if (faults_.link_error_rate == 0) break;
    // Every rank must take the same decision: replay if any chip saw a corrupted transfer.
    int64_t faults = step_faults_;
    if (n_ranks_ > 1) check_mpi(MPI_Allreduce(MPI_IN_PLACE, &faults, 1, MPI_INT64_T, MPI_SUM, comm_), "MPI_Allreduce(faults)", rank_);
    if (faults == 0) break;
    link_faults_detected_ += faults;
    if (attempt_ == faults_.max_replays) {
      int64_t first_send = first_fault_send_;
      if (n_ranks_ > 1)
        check_mpi(MPI_Allreduce(MPI_IN_PLACE, &first_send, 1, MPI_INT64_T, MPI_MIN, comm_), "MPI_Allreduce(faults)", rank_);
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
    const partition::Timeline t = partition::compute_timeline(p, plan_, pos);
    replay_cycles_ += n == 1 ? partition::decode_period_cycles(plan_, p, t) : t.makespan_cycles;
  }
  ++forward_calls_;
  if (logits == nullptr || timing_only_) return;
  // Logits leave the last stage for the host: each chip's vocabulary slice, -0.0 (the identity of float
  // addition) elsewhere, so a sum over the ranks assembles them exactly on every rank.
  const int vocab = static_cast<int>(cfg.vocab_size);
  std::fill(logits, logits + vocab, -0.0f);
  for (LocalChip& c : chips_) {
    if (plan_.chips[static_cast<std::size_t>(&c - chips_.data() + first_local_chip_)].replica != replica) continue;
    const chip::ShardRange& r = c.shard->range();
    if (r.n_vocab() > 0) std::copy(c.shard->logits_out(), c.shard->logits_out() + r.n_vocab(), logits + r.vocab_begin);
  }
  if (n_ranks_ > 1) {
    const auto t0 = std::chrono::steady_clock::now();
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, logits, vocab, MPI_FLOAT, MPI_SUM, comm_), "MPI_Allreduce(logits)", rank_);
    mpi_wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
}

void* Engine::payload_at(const Op& op, LocalChip& c, bool sending) {
  const auto peer_tp = static_cast<std::size_t>(plan_.chips[static_cast<std::size_t>(sending ? op.chip : op.peer)].tp_rank);
  const auto begin = static_cast<std::size_t>(op.elem_begin);
  switch (op.payload) {
    case Payload::amax:
      return sending ? const_cast<float*>(c.shard->amax()) : c.peer_amax.data() + peer_tp * static_cast<std::size_t>(plan_.shape.block_tokens);
    case Payload::partial_sums:
      return sending ? const_cast<int32_t*>(c.shard->partial_sums()) + begin : c.rs_sums.data() + peer_tp * static_cast<std::size_t>(slice_);
    case Payload::embedding_partial:
      return sending ? c.x.data() + begin : c.rs_floats.data() + peer_tp * static_cast<std::size_t>(slice_);
    case Payload::reduced_sums: return c.sums.data() + begin;
    case Payload::embedding_reduced: return c.x.data() + begin;
    case Payload::activations: return c.x.data() + begin;
    case Payload::moe_partial:
      return sending ? c.shard->moe_slots() + begin : c.rs_floats.data() + peer_tp * static_cast<std::size_t>(slice_);
    case Payload::moe_reduced: return c.shard->moe_slots() + begin;
    case Payload::none: break;
  }
  LPURT_ASSERT(false);
}

void Engine::wait(LocalChip& c) {
  if (c.pending.empty()) return;
  const auto t0 = std::chrono::steady_clock::now();
  const auto n = static_cast<int>(c.pending.size());
  if (faults_.step_timeout_s <= 0) {
    check_mpi(MPI_Waitall(n, c.pending.data(), MPI_STATUSES_IGNORE), "MPI_Waitall", rank_);
  } else {
    // Poll, so that a transfer that never comes (a stuck or dead peer) is reported instead of hanging.
    int done = 0;
    check_mpi(MPI_Testall(n, c.pending.data(), &done, MPI_STATUSES_IGNORE), "MPI_Testall", rank_);
    while (done == 0) {
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (waited > faults_.step_timeout_s) report_stuck(c, waited);
      std::this_thread::yield();
      check_mpi(MPI_Testall(n, c.pending.data(), &done, MPI_STATUSES_IGNORE), "MPI_Testall", rank_);
    }
  }
  c.pending.clear();
  c.pending_ops.clear();
  mpi_wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const int32_t i : c.to_verify) {
    const Op& op = current_->ops[static_cast<std::size_t>(i)];
    check_arrival(static_cast<std::size_t>(i), timing_only_ ? nullptr : payload_at(op, c, false), op.bytes,
                  received_checksums_[static_cast<std::size_t>(i)]);
  }
  c.to_verify.clear();
}

bool Engine::link_fault(int64_t send_index) const {
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

void Engine::report_stuck(LocalChip& c, double waited_s) {
  std::size_t stuck = 0;
  for (; stuck < c.pending.size(); ++stuck) {
    int flag = 0;
    MPI_Test(&c.pending[stuck], &flag, MPI_STATUS_IGNORE);
    if (flag == 0) break;
  }
  if (stuck == c.pending.size()) stuck = 0;
  const Op& op = current_->ops[static_cast<std::size_t>(c.pending_ops[stuck])];
  const int64_t chip = op.chip + current_offset_, peer = op.peer + current_offset_;
  char seconds[32], limit[32];
  std::snprintf(seconds, sizeof seconds, "%.1f", waited_s);
  std::snprintf(limit, sizeof limit, "%.1f", faults_.step_timeout_s);
  throw Error("chip " + std::to_string(chip) + " on rank " + std::to_string(rank_) + " waited " + seconds + " s for " +
                  (op.kind == OpKind::recv ? "a transfer from" : "its transfer to") + " chip " + std::to_string(peer) +
                  " on rank " + std::to_string(owner_[static_cast<std::size_t>(peer)]) + " (" +
                  partition::payload_name(op.payload) + ", " + std::to_string(op.bytes) + " bytes" +
                  (op.layer >= 0 ? ", layer " + std::to_string(op.layer) : std::string()) +
                  "): that rank is stuck or dead (step timeout " + limit + " s, --step-timeout)",
              ExitCode::runtime);
}

void Engine::execute(const partition::Program& p, int64_t replica, int64_t slot, const int32_t* tokens, int64_t pos) {
  const int64_t offset = replica * plan_.chips_per_replica();
  current_ = &p;
  current_offset_ = offset;
  if (rank_ == faults_.crash_rank) std::raise(SIGKILL);  // injected: this rank dies
  while (rank_ == faults_.stall_rank) std::this_thread::sleep_for(std::chrono::seconds(1));  // injected: stuck
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    const Op& op = p.ops[i];
    LocalChip* c = local(op.chip + offset);
    if (c == nullptr) continue;
    const int64_t peer = op.peer + offset;
    const int count = timing_only_ ? 0 : static_cast<int>(op.bytes);
    if (timing_only_ && (op.kind == OpKind::send || op.kind == OpKind::recv) && local(peer) != nullptr) {
      if (op.kind == OpKind::send && faults_.link_error_rate > 0) check_arrival(static_cast<std::size_t>(op.match), nullptr, 0, 0);
      continue;
    }
    if (op.kind == OpKind::send) {
      LocalChip* receiver = local(peer);
      const void* src = timing_only_ ? nullptr : payload_at(op, *c, true);
      const bool checked = faults_.link_error_rate > 0;
      if (receiver != nullptr) {
        // The receiver's x may still be the source of its own pending send to the next stage.
        if (op.payload == Payload::activations) wait(*receiver);
        void* dst = timing_only_ ? nullptr : payload_at(p.ops[static_cast<std::size_t>(op.match)], *receiver, false);
        if (!timing_only_) std::memcpy(dst, src, op.bytes);
        if (checked) check_arrival(static_cast<std::size_t>(op.match), dst, op.bytes, timing_only_ ? 0 : checksum(src, op.bytes));
      } else {
        c->pending.emplace_back();
        c->pending_ops.push_back(static_cast<int32_t>(i));
        check_mpi(MPI_Isend(src, count, MPI_BYTE, owner_[static_cast<std::size_t>(peer)], tag_of(static_cast<int64_t>(i)),
                            comm_, &c->pending.back()),
                  "MPI_Isend", rank_);
        if (checked && !timing_only_) {
          sent_checksums_[i] = checksum(src, op.bytes);
          c->pending.emplace_back();
          c->pending_ops.push_back(static_cast<int32_t>(i));
          check_mpi(MPI_Isend(&sent_checksums_[i], 1, MPI_UINT64_T, owner_[static_cast<std::size_t>(peer)],
                              tag_of(static_cast<int64_t>(i)), checksum_comm_, &c->pending.back()),
                    "MPI_Isend(checksum)", rank_);
        }
      }
    } else if (op.kind == OpKind::recv) {
      if (local(peer) != nullptr) continue;  // copied at the send
      // x is the only receive buffer a pending send of the same chip can still be reading (its previous
      // block's activations, sent on to the next stage): finish that send before x is overwritten.
      if (op.payload == Payload::activations) wait(*c);
      c->pending.emplace_back();
      c->pending_ops.push_back(static_cast<int32_t>(i));
      check_mpi(MPI_Irecv(timing_only_ ? nullptr : payload_at(op, *c, false), count, MPI_BYTE, owner_[static_cast<std::size_t>(peer)],
                          tag_of(op.match), comm_, &c->pending.back()),
                "MPI_Irecv", rank_);
      if (faults_.link_error_rate > 0) {
        c->to_verify.push_back(static_cast<int32_t>(i));
        if (!timing_only_) {
          c->pending.emplace_back();
          c->pending_ops.push_back(static_cast<int32_t>(i));
          check_mpi(MPI_Irecv(&received_checksums_[i], 1, MPI_UINT64_T, owner_[static_cast<std::size_t>(peer)],
                              tag_of(op.match), checksum_comm_, &c->pending.back()),
                    "MPI_Irecv(checksum)", rank_);
        }
      }
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
      if (parallel_group_.size() == 1) {
        run(parallel_group_.front());
      } else {
        tbb::parallel_for(std::size_t{0}, parallel_group_.size(), [&](std::size_t g) { run(parallel_group_[g]); });
      }
      i = static_cast<std::size_t>(parallel_group_.back());
    }
  }
  for (LocalChip& c : chips_) wait(c);
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
      std::copy(s.amax(), s.amax() + n, c.amax.begin());
      for (int64_t t = 0; t < plan_.tp; ++t) {
        if (t == plan_.chips[static_cast<std::size_t>(op.chip)].tp_rank) continue;
        const float* peer = c.peer_amax.data() + t * plan_.shape.block_tokens;
        for (int64_t k = 0; k < n; ++k) c.amax[static_cast<std::size_t>(k)] = std::max(c.amax[static_cast<std::size_t>(k)], peer[k]);
      }
      break;
    }
    case OpKind::wo: s.attention_out_partial(op.layer, n, amax); break;
    case OpKind::down: s.ffn_out_partial(op.layer, n, amax); break;
    case OpKind::reduce_sum: {
      // This chip owns slice j of the flat [n x D] array; add the other chips' slices in tp order.
      const int64_t me = plan_.chips[static_cast<std::size_t>(op.chip)].tp_rank;
      const int64_t count = op.payload == Payload::moe_partial ? n * plan_.model.n_experts_per_token * d : n * d;
      const int64_t begin = partition::split_begin(count, plan_.tp, me), end = partition::split_begin(count, plan_.tp, me + 1);
      if (op.payload == Payload::partial_sums) {
        std::copy(s.partial_sums() + begin, s.partial_sums() + end, c.sums.begin() + begin);
        for (int64_t t = 0; t < plan_.tp; ++t) {
          if (t == me) continue;
          const int32_t* in = c.rs_sums.data() + t * slice_;
          // Modulo 2^32: exact for valid partials (each is bounded by its own slice of the dot product, so
          // any sum of them fits int32), and defined for a corrupted transfer awaiting its replay.
          for (int64_t k = begin; k < end; ++k)
            c.sums[static_cast<std::size_t>(k)] = static_cast<int32_t>(static_cast<uint32_t>(c.sums[static_cast<std::size_t>(k)]) +
                                                                       static_cast<uint32_t>(in[k - begin]));
        }
      } else {
        // Float slices with one holder per element (embedding rows, expert slots): exact in any order.
        float* target = op.payload == Payload::moe_partial ? s.moe_slots() : c.x.data();
        for (int64_t t = 0; t < plan_.tp; ++t) {
          if (t == me) continue;
          const float* in = c.rs_floats.data() + t * slice_;
          for (int64_t k = begin; k < end; ++k) target[k] += in[k - begin];
        }
      }
      break;
    }
    case OpKind::attn_residual: s.add_attention_output(op.layer, n, sums, amax, c.x.data()); break;
    case OpKind::ffn_residual:
      if (plan_.model.is_moe()) s.add_moe_output(n, s.moe_slots(), c.x.data());
      else s.add_ffn_output(op.layer, n, sums, amax, c.x.data());
      break;
    case OpKind::moe: s.moe_partial(op.layer, n, c.x.data()); break;
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
