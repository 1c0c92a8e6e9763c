#include "runtime/engine.hpp"

#include <algorithm>
#include <cstring>

#include "chip/error.hpp"

namespace lpurt::runtime {

namespace {

/// A failed MPI call during a run: the message names the call and the rank.
void check_mpi(int status, const char* call, int rank) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(status, text, &length);
  throw Error(std::string(call) + " failed on rank " + std::to_string(rank) + ": " + std::string(text, static_cast<std::size_t>(length)),
              ExitCode::runtime);
}

}  // namespace

int Engine::rank_of_chip(int64_t chip, int64_t n_chips, int n_ranks) {
  // Inverse of "rank r holds chips [n_chips * r / n_ranks, n_chips * (r + 1) / n_ranks)".
  return static_cast<int>(((chip + 1) * n_ranks - 1) / n_chips);
}

Engine::Engine(const partition::Plan& plan, io::WeightSource& source, MPI_Comm comm) : plan_(plan), comm_(comm) {
  const chip::ModelConfig& cfg = plan.model;
  // Without MPI_Init (unit tests, tools) the engine is one rank and makes no MPI call.
  int mpi_initialized = 0;
  MPI_Initialized(&mpi_initialized);
  if (mpi_initialized) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &n_ranks_);
  }
  if (cfg.is_moe() && plan.tp > 1)
    throw partition::PlanError("mixtral with tp > 1 (expert parallelism) is not supported yet; use --tp 1");
  if (n_ranks_ > plan.n_chips())
    throw Error(std::to_string(n_ranks_) + " MPI ranks for " + std::to_string(plan.n_chips()) +
                    " chips: every rank must host at least one chip",
                ExitCode::config);
  stage_shards_.resize(static_cast<std::size_t>(plan.pp));
  stage_first_rank_.assign(static_cast<std::size_t>(plan.pp), n_ranks_);
  stage_last_rank_.assign(static_cast<std::size_t>(plan.pp), -1);
  for (const auto& c : plan.chips) {
    const int owner = rank_of_chip(c.chip, plan.n_chips(), n_ranks_);
    const auto s = static_cast<std::size_t>(c.stage);
    stage_first_rank_[s] = std::min(stage_first_rank_[s], owner);
    stage_last_rank_[s] = std::max(stage_last_rank_[s], owner);
    if (owner != rank_) continue;
    shards_.push_back(std::make_unique<chip::Shard>(cfg, c.range, plan.shape));
    io::load_shard(source, *shards_.back());
    stage_shards_[s].push_back(shards_.back().get());
  }
  // One communicator per stage whose chips span ranks (the chips of a rank are contiguous, so a stage's
  // ranks are the range [first, last]). Stages on one rank reduce in memory and need none.
  stage_comm_.assign(static_cast<std::size_t>(plan.pp), MPI_COMM_NULL);
  for (int64_t s = 0; s < plan.pp; ++s) {
    const auto i = static_cast<std::size_t>(s);
    if (stage_first_rank_[i] == stage_last_rank_[i]) continue;
    const bool member = rank_ >= stage_first_rank_[i] && rank_ <= stage_last_rank_[i];
    check_mpi(MPI_Comm_split(comm_, member ? 0 : MPI_UNDEFINED, rank_, &stage_comm_[i]), "MPI_Comm_split", rank_);
  }
  const int64_t b = plan.shape.block_tokens;
  x_.assign(static_cast<std::size_t>(b * cfg.hidden_size), 0.0f);
  amax_.assign(static_cast<std::size_t>(b), 0.0f);
  sums_.assign(static_cast<std::size_t>(b * cfg.hidden_size), 0);
}

Engine::~Engine() {
  for (MPI_Comm& c : stage_comm_)
    if (c != MPI_COMM_NULL) MPI_Comm_free(&c);
}

void Engine::reduce_amax(int64_t stage, int64_t n) {
  const auto& chips = local(stage);
  std::copy(chips[0]->amax(), chips[0]->amax() + n, amax_.begin());
  for (std::size_t c = 1; c < chips.size(); ++c) {
    const float* a = chips[c]->amax();
    for (int64_t i = 0; i < n; ++i) amax_[static_cast<std::size_t>(i)] = std::max(amax_[static_cast<std::size_t>(i)], a[i]);
  }
  const MPI_Comm group = stage_comm_[static_cast<std::size_t>(stage)];
  if (group != MPI_COMM_NULL)
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, amax_.data(), static_cast<int>(n), MPI_FLOAT, MPI_MAX, group), "MPI_Allreduce(max)",
              rank_);
}

void Engine::reduce_sums(int64_t stage, int64_t n) {
  const int64_t count = n * plan_.model.hidden_size;
  const auto& chips = local(stage);
  std::copy(chips[0]->partial_sums(), chips[0]->partial_sums() + count, sums_.begin());
  for (std::size_t c = 1; c < chips.size(); ++c) {
    const int32_t* p = chips[c]->partial_sums();
    for (int64_t i = 0; i < count; ++i) sums_[static_cast<std::size_t>(i)] += p[i];
  }
  const MPI_Comm group = stage_comm_[static_cast<std::size_t>(stage)];
  if (group != MPI_COMM_NULL)
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, sums_.data(), static_cast<int>(count), MPI_INT32_T, MPI_SUM, group),
              "MPI_Allreduce(sum)", rank_);
}

void Engine::hand_over(int64_t stage, int64_t n) {
  const auto prev = static_cast<std::size_t>(stage - 1);
  const auto next = static_cast<std::size_t>(stage);
  const int count = static_cast<int>(n * plan_.model.hidden_size);
  const int sender = stage_first_rank_[prev];
  // Ranks of the next stage that also held the previous one already have x (it is replicated).
  for (int r = stage_first_rank_[next]; r <= stage_last_rank_[next]; ++r) {
    if (r >= stage_first_rank_[prev] && r <= stage_last_rank_[prev]) continue;
    const int tag = static_cast<int>(stage % 32768);
    if (rank_ == sender)
      check_mpi(MPI_Send(x_.data(), count, MPI_FLOAT, r, tag, comm_), "MPI_Send(activations)", rank_);
    else if (rank_ == r)
      check_mpi(MPI_Recv(x_.data(), count, MPI_FLOAT, sender, tag, comm_, MPI_STATUS_IGNORE), "MPI_Recv(activations)",
                rank_);
  }
}

void Engine::forward(int64_t slot, const int32_t* tokens, int64_t pos, int64_t n, float* logits) {
  const chip::ModelConfig& cfg = plan_.model;
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg.vocab_size)
      throw Error("token " + std::to_string(tokens[i]) + " at position " + std::to_string(pos + i) +
                      " is outside the vocabulary [0, " + std::to_string(cfg.vocab_size) + ")",
                  ExitCode::usage);
  if (pos + n > plan_.shape.context)
    throw chip::CapacityError("positions up to " + std::to_string(pos + n) + " exceed the KV-cache context of " +
                              std::to_string(plan_.shape.context));
  const int64_t block = plan_.shape.block_tokens;
  for (int64_t done = 0; done < n; done += block) {
    const int64_t m = std::min(block, n - done);
    forward_block(slot, tokens + done, pos + done, m, logits != nullptr && done + m == n, logits);
  }
}

void Engine::forward_block(int64_t slot, const int32_t* tokens, int64_t pos, int64_t n, bool want_logits,
                           float* logits) {
  const chip::ModelConfig& cfg = plan_.model;
  const int64_t d = cfg.hidden_size;
  if (!local(0).empty()) {
    // Each token's row lives on the stage-0 chip whose range holds it; the others contribute -0.0, the
    // identity of float addition, so the sum over the stage's ranks assembles x exactly.
    std::fill(x_.begin(), x_.begin() + n * d, -0.0f);
    for (int64_t i = 0; i < n; ++i)
      for (chip::Shard* c : local(0))
        if (tokens[i] >= c->range().embed_begin && tokens[i] < c->range().embed_end) c->embed(tokens + i, 1, x_.data() + i * d);
    if (stage_comm_[0] != MPI_COMM_NULL)
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, x_.data(), static_cast<int>(n * d), MPI_FLOAT, MPI_SUM, stage_comm_[0]),
                "MPI_Allreduce(embedding)", rank_);
  }
  for (int64_t s = 0; s < plan_.pp; ++s) {
    if (s > 0) hand_over(s, n);
    const auto& chips = local(s);
    if (chips.empty()) continue;
    const int64_t layer_begin = plan_.stage_layer_begin[static_cast<std::size_t>(s)];
    const int64_t layer_end = plan_.stage_layer_begin[static_cast<std::size_t>(s + 1)];
    for (int64_t l = layer_begin; l < layer_end; ++l) {
      for (chip::Shard* c : chips) c->attention_in(slot, l, pos, n, x_.data());
      reduce_amax(s, n);
      for (chip::Shard* c : chips) c->attention_out_partial(l, n, amax_.data());
      reduce_sums(s, n);
      chips[0]->add_attention_output(l, n, sums_.data(), amax_.data(), x_.data());
      if (cfg.is_moe()) {
        chips[0]->moe_ffn(l, n, x_.data());
        continue;
      }
      for (chip::Shard* c : chips) c->ffn_in(l, n, x_.data());
      reduce_amax(s, n);
      for (chip::Shard* c : chips) c->ffn_out_partial(l, n, amax_.data());
      reduce_sums(s, n);
      chips[0]->add_ffn_output(l, n, sums_.data(), amax_.data(), x_.data());
    }
  }
  if (!want_logits) return;
  // The last stage's chips each compute their vocabulary slice; -0.0 elsewhere makes the sum exact. Every
  // rank needs the logits (the next token feeds stage 0), so the last stage's first rank broadcasts them.
  const int64_t last = plan_.pp - 1;
  const int root = stage_first_rank_[static_cast<std::size_t>(last)];
  const int vocab = static_cast<int>(cfg.vocab_size);
  if (!local(last).empty()) {
    std::fill(logits, logits + vocab, -0.0f);
    for (chip::Shard* c : local(last)) {
      c->logits(x_.data() + (n - 1) * d);
      std::copy(c->logits_out(), c->logits_out() + c->range().n_vocab(), logits + c->range().vocab_begin);
    }
    const MPI_Comm group = stage_comm_[static_cast<std::size_t>(last)];
    if (group != MPI_COMM_NULL)
      check_mpi(MPI_Reduce(rank_ == root ? MPI_IN_PLACE : logits, logits, vocab, MPI_FLOAT, MPI_SUM, 0, group),
                "MPI_Reduce(logits)", rank_);
  }
  if (n_ranks_ > 1) check_mpi(MPI_Bcast(logits, vocab, MPI_FLOAT, root, comm_), "MPI_Bcast(logits)", rank_);
}

}  // namespace lpurt::runtime
