// The split of a model over chips (chip/split.hpp), checked without MPI over many layouts: within each
// replica the chips' tensor slices cover every tensor, split tensors exactly once and replicated ones
// once per chip that needs them; the bytes SRAM accounting counts are the bytes a loader reads; and a
// reduction's shares tile its array.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <tuple>

#include "chip/split.hpp"
#include "io/weight_source.hpp"
#include "partition/plan.hpp"

using namespace lpurt;
using chip::TensorKind;

namespace {

struct Layout {
  std::string model;
  int64_t tp, pp, replicas;
};

/// The presets, and "wide-mixtral": tiny-mixtral with 8 query heads, so that a stage's 5 to 8 chips
/// exceed its 4 experts and slice them by FFN columns.
chip::ModelConfig model_of(const std::string& name) {
  if (name != "wide-mixtral") return chip::model_preset(name);
  chip::ModelConfig cfg = chip::model_preset("tiny-mixtral");
  cfg.n_heads = 8;
  return cfg;
}

std::vector<Layout> layouts() {
  std::vector<Layout> all;
  for (const char* model : {"tiny", "tiny-mixtral", "wide-mixtral"})
    for (int64_t tp : {1, 2, 3, 4, 5, 6, 8})
      for (int64_t pp : {1, 2, 3, 4})
        for (int64_t replicas : {1, 2})
          if (tp <= model_of(model).n_heads) all.push_back({model, tp, pp, replicas});
  return all;
}

partition::Plan plan_of(const Layout& l) {
  partition::PlanRequest r;
  r.n_chips = l.tp * l.pp * l.replicas;
  r.tp = l.tp;
  r.pp = l.pp;
  r.replicas = l.replicas;
  r.context = 32;
  r.batch = l.replicas;
  return partition::make_plan(model_of(l.model), chip::ChipSpec{}, r);
}

using TensorKey = std::tuple<int, int64_t, int64_t>;  // kind, layer, expert
TensorKey key_of(const chip::TensorId& id) { return {static_cast<int>(id.kind), id.layer, id.expert}; }

/// How many chips of one stage (tp of them) need each row of a tensor: independently of chip/split.hpp,
/// from the head ranges alone for wk and wv (a KV head is needed by every chip with one of its query heads).
int64_t expected_holders(const chip::ModelConfig& cfg, const chip::TensorId& id, int64_t row, int64_t tp) {
  switch (id.kind) {
    case TensorKind::attn_norm:
    case TensorKind::ffn_norm:
    case TensorKind::router:
    case TensorKind::final_norm: return tp;
    case TensorKind::wk:
    case TensorKind::wv: {
      const int64_t kv_head = row / cfg.head_dim(), group = cfg.heads_per_kv_head();
      int64_t holders = 0;
      for (int64_t t = 0; t < tp; ++t) {
        const int64_t first = cfg.n_heads * t / tp, last = cfg.n_heads * (t + 1) / tp;
        holders += first < (kv_head + 1) * group && last > kv_head * group ? 1 : 0;
      }
      return holders;
    }
    default: return 1;
  }
}

}  // namespace

TEST(Split, SlicesCoverEveryTensorOncePerReplica) {
  for (const Layout& l : layouts()) {
    SCOPED_TRACE(l.model + " tp " + std::to_string(l.tp) + " pp " + std::to_string(l.pp) + " x " +
                 std::to_string(l.replicas));
    const partition::Plan plan = plan_of(l);
    const chip::ModelConfig& cfg = plan.model;
    for (int64_t replica = 0; replica < plan.replicas; ++replica) {
      std::map<TensorKey, std::vector<int32_t>> holders;  // per tensor: [rows, cols] chips holding the element
      for (const chip::TensorId& id : chip::model_tensors(cfg)) {
        const chip::TensorShape s = chip::tensor_shape(cfg, id);
        holders[key_of(id)].assign(static_cast<std::size_t>(s.rows * s.cols), 0);
      }
      for (int64_t stage = 0; stage < plan.pp; ++stage)
        for (int64_t t = 0; t < plan.tp; ++t)
          for (const chip::TensorSlice& slice : chip::tensor_slices(cfg, plan.at(replica, stage, t).range)) {
            auto it = holders.find(key_of(slice.tensor));
            ASSERT_NE(it, holders.end()) << chip::tensor_path(slice.tensor) << " is not a tensor of the model";
            const int64_t cols = chip::tensor_shape(cfg, slice.tensor).cols;
            ASSERT_TRUE(slice.row_begin >= 0 && slice.row_end <= chip::tensor_shape(cfg, slice.tensor).rows &&
                        slice.col_begin >= 0 && slice.col_end <= cols)
                << chip::tensor_path(slice.tensor);
            for (int64_t r = slice.row_begin; r < slice.row_end; ++r)
              for (int64_t c = slice.col_begin; c < slice.col_end; ++c) ++it->second[static_cast<std::size_t>(r * cols + c)];
          }
      for (const chip::TensorId& id : chip::model_tensors(cfg)) {
        const std::vector<int32_t>& count = holders[key_of(id)];
        const int64_t cols = chip::tensor_shape(cfg, id).cols;
        for (std::size_t i = 0; i < count.size(); ++i) {
          const int64_t row = static_cast<int64_t>(i) / cols;
          ASSERT_EQ(count[i], expected_holders(cfg, id, row, plan.tp))
              << chip::tensor_path(id) << " element (" << row << ", " << static_cast<int64_t>(i) % cols << ")";
        }
      }
    }
  }
}

TEST(Split, AccountedBytesAreTheBytesRead) {
  for (const Layout& l : layouts()) {
    SCOPED_TRACE(l.model + " tp " + std::to_string(l.tp) + " pp " + std::to_string(l.pp) + " x " +
                 std::to_string(l.replicas));
    const partition::Plan plan = plan_of(l);
    int64_t replica_bytes = 0;
    for (const partition::ChipPlan& c : plan.chips) {
      io::SyntheticModel source(plan.model, 3, "test");
      chip::Shard shard(plan.model, c.range, plan.shape);
      io::load_shard(source, shard);
      EXPECT_EQ(source.bytes_read(), c.sram.weight_bytes) << "chip " << c.chip;
      EXPECT_EQ(chip::slice_weight_bytes(plan.model, c.range), c.sram.weight_bytes) << "chip " << c.chip;
      if (c.replica == 0) replica_bytes += c.sram.weight_bytes;
    }
    // Split tensors are held once per replica, so a replica holds at least the model.
    EXPECT_GE(replica_bytes, plan.model.weight_bytes());
    if (l.tp == 1) {
      EXPECT_EQ(replica_bytes, plan.model.weight_bytes());
    }
  }
}

TEST(Split, ReductionSharesTileTheArray) {
  for (int64_t elements : {0, 1, 7, 64, 1000})
    for (int64_t members : {1, 2, 3, 8}) {
      const partition::Reduction r{elements, members};
      int64_t next = 0, largest = 0;
      for (int64_t m = 0; m < members; ++m) {
        EXPECT_EQ(r.begin(m), next);
        EXPECT_GE(r.end(m), r.begin(m));
        largest = std::max(largest, r.end(m) - r.begin(m));
        next = r.end(m);
      }
      EXPECT_EQ(next, elements);
      EXPECT_EQ(r.max_share(), largest) << elements << " over " << members;
    }
}

TEST(Split, ReductionArraysArePerToken) {
  const partition::Plan plan = plan_of({"tiny-mixtral", 2, 1, 1});
  const chip::ModelConfig& cfg = plan.model;
  EXPECT_EQ(plan.reduction(partition::Reduced::linear_output, 5).elements, 5 * cfg.hidden_size);
  EXPECT_EQ(plan.reduction(partition::Reduced::embedding, 5).elements, 5 * cfg.hidden_size);
  EXPECT_EQ(plan.reduction(partition::Reduced::expert_slots, 5).elements, 5 * cfg.n_experts_per_token * cfg.hidden_size);
  EXPECT_EQ(plan.reduction(partition::Reduced::linear_output, 5).members, 2);
}
