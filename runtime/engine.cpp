#include "runtime/engine.hpp"

#include <algorithm>
#include <cstring>

#include "chip/error.hpp"

namespace lpurt::runtime {

Engine::Engine(const partition::Plan& plan, io::WeightSource& source) : plan_(plan) {
  const chip::ModelConfig& cfg = plan.model;
  if (cfg.is_moe() && plan.tp > 1)
    throw partition::PlanError("mixtral with tp > 1 (expert parallelism) is not supported yet; use --tp 1");
  for (const auto& c : plan.chips) {
    shards_.push_back(std::make_unique<chip::Shard>(cfg, c.range, plan.shape));
    io::load_shard(source, *shards_.back());
  }
  const int64_t b = plan.shape.block_tokens;
  x_.assign(static_cast<std::size_t>(b * cfg.hidden_size), 0.0f);
  amax_.assign(static_cast<std::size_t>(b), 0.0f);
  sums_.assign(static_cast<std::size_t>(b * cfg.hidden_size), 0);
}

void Engine::reduce_amax(int64_t stage, int64_t n) {
  std::copy(shard(stage, 0).amax(), shard(stage, 0).amax() + n, amax_.begin());
  for (int64_t t = 1; t < plan_.tp; ++t) {
    const float* a = shard(stage, t).amax();
    for (int64_t i = 0; i < n; ++i) amax_[static_cast<std::size_t>(i)] = std::max(amax_[static_cast<std::size_t>(i)], a[i]);
  }
}

void Engine::reduce_sums(int64_t stage, int64_t n) {
  const int64_t count = n * plan_.model.hidden_size;
  std::copy(shard(stage, 0).partial_sums(), shard(stage, 0).partial_sums() + count, sums_.begin());
  for (int64_t t = 1; t < plan_.tp; ++t) {
    const int32_t* p = shard(stage, t).partial_sums();
    for (int64_t i = 0; i < count; ++i) sums_[static_cast<std::size_t>(i)] += p[i];
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
  // Each token's embedding row lives on the stage-0 chip whose vocabulary range holds it.
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < plan_.tp; ++t) {
      const chip::ShardRange& g = plan_.at(0, t).range;
      if (tokens[i] >= g.embed_begin && tokens[i] < g.embed_end) shard(0, t).embed(tokens + i, 1, x_.data() + i * d);
    }
  for (int64_t s = 0; s < plan_.pp; ++s) {
    const int64_t layer_begin = plan_.stage_layer_begin[static_cast<std::size_t>(s)];
    const int64_t layer_end = plan_.stage_layer_begin[static_cast<std::size_t>(s + 1)];
    for (int64_t l = layer_begin; l < layer_end; ++l) {
      for (int64_t t = 0; t < plan_.tp; ++t) shard(s, t).attention_in(slot, l, pos, n, x_.data());
      reduce_amax(s, n);
      for (int64_t t = 0; t < plan_.tp; ++t) shard(s, t).attention_out_partial(l, n, amax_.data());
      reduce_sums(s, n);
      shard(s, 0).add_attention_output(l, n, sums_.data(), amax_.data(), x_.data());
      if (cfg.is_moe()) {
        shard(s, 0).moe_ffn(l, n, x_.data());
        continue;
      }
      for (int64_t t = 0; t < plan_.tp; ++t) shard(s, t).ffn_in(l, n, x_.data());
      reduce_amax(s, n);
      for (int64_t t = 0; t < plan_.tp; ++t) shard(s, t).ffn_out_partial(l, n, amax_.data());
      reduce_sums(s, n);
      shard(s, 0).add_ffn_output(l, n, sums_.data(), amax_.data(), x_.data());
    }
  }
  if (!want_logits) return;
  const float* last = x_.data() + (n - 1) * d;
  for (int64_t t = 0; t < plan_.tp; ++t) {
    chip::Shard& c = shard(plan_.pp - 1, t);
    c.logits(last);
    std::copy(c.logits_out(), c.logits_out() + c.range().n_vocab(), logits + c.range().vocab_begin);
  }
}

}  // namespace lpurt::runtime
