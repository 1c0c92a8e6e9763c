#include "io/weight_source.hpp"

#include <tbb/parallel_for.h>

#include <cmath>

#include "chip/error.hpp"
#include "chip/hash.hpp"

namespace lpurt::io {

using chip::TensorId;
using chip::TensorKind;

void load_shard(WeightSource& source, chip::Shard& shard) {
  chip::ShardWeights& w = shard.weights();
  chip::for_each_slice(source.config(), shard.range(), [&](const chip::TensorSlice& slice) {
    const chip::ShardWeights::Target t = w.target(slice, shard.range());
    if (t.floats != nullptr) {
      source.read_floats(slice.tensor, slice.row_begin, slice.row_end, t.floats->data());
      return;
    }
    if (slice.cols() > 0)  // a slice of no columns holds the row scales alone
      source.read_weight(slice.tensor, slice.row_begin, slice.row_end, slice.col_begin, slice.col_end, t.matrix->weight.data());
    source.read_scale(slice.tensor, slice.row_begin, slice.row_end, t.matrix->scale.data());
  });
}

namespace {

// Weights come from a counter-based generator (splitmix64), so value i of a tensor never depends on how
// the tensor is sliced.
using chip::mix;

enum class Field : uint64_t { weight = 1, scale = 2, floats = 3 };

uint64_t tensor_key(uint64_t seed, const TensorId& id, Field field) {
  uint64_t k = mix(seed);
  k = mix(k ^ static_cast<uint64_t>(id.kind));
  k = mix(k ^ static_cast<uint64_t>(id.layer + 1));
  k = mix(k ^ static_cast<uint64_t>(id.expert + 1));
  return mix(k ^ static_cast<uint64_t>(field));
}

/// Uniform in [0, 1), exactly representable as a float.
inline double unit(uint64_t key, uint64_t index) { return static_cast<double>(mix(key ^ mix(index)) >> 40) * 0x1p-24; }

}  // namespace

SyntheticModel::SyntheticModel(const chip::ModelConfig& cfg, uint64_t seed, std::string name)
    : cfg_(cfg), seed_(seed), name_(std::move(name)) {
  cfg_.validate();
}

void SyntheticModel::read_weight(const TensorId& requested, int64_t row_begin, int64_t row_end, int64_t col_begin,
                                 int64_t col_end, int8_t* dst) {
  const TensorId id = chip::stored_tensor(cfg_, requested);
  const int64_t n_cols = chip::tensor_shape(cfg_, id).cols;
  const uint64_t key = tensor_key(seed_, id, Field::weight);
  const int64_t width = col_end - col_begin;
  tbb::parallel_for(row_begin, row_end, [&](int64_t row) {
    int8_t* out = dst + (row - row_begin) * width;
    for (int64_t col = col_begin; col < col_end; ++col)
      out[col - col_begin] = static_cast<int8_t>(static_cast<int>(mix(key ^ mix(static_cast<uint64_t>(row * n_cols + col))) % 255) - 127);
  });
  bytes_read_ += (row_end - row_begin) * width;
}

void SyntheticModel::read_scale(const TensorId& requested, int64_t row_begin, int64_t row_end, float* dst) {
  const TensorId id = chip::stored_tensor(cfg_, requested);
  // int8 weights uniform in [-127, 127] have RMS 127/sqrt(3); this scale makes a row's output RMS equal its
  // input's RMS (embedding rows get RMS 1), with a +-25% per-row spread so that per-row scales matter.
  const int64_t n_cols = chip::tensor_shape(cfg_, id).cols;
  const bool embedding = id.kind == TensorKind::embedding;
  const double base = std::sqrt(3.0) / 127.0 / (embedding ? 1.0 : std::sqrt(static_cast<double>(n_cols)));
  const uint64_t key = tensor_key(seed_, id, Field::scale);
  for (int64_t row = row_begin; row < row_end; ++row)
    dst[row - row_begin] = static_cast<float>(base * (0.75 + 0.5 * unit(key, static_cast<uint64_t>(row))));
  bytes_read_ += 4 * (row_end - row_begin);
}

void SyntheticModel::read_floats(const TensorId& id, int64_t row_begin, int64_t row_end, float* dst) {
  const chip::TensorShape s = chip::tensor_shape(cfg_, id);
  const uint64_t key = tensor_key(seed_, id, Field::floats);
  const bool bias = id.kind == TensorKind::wq_bias || id.kind == TensorKind::wk_bias || id.kind == TensorKind::wv_bias;
  const int64_t first = row_begin * s.cols, n = (row_end - row_begin) * s.cols;
  for (int64_t i = 0; i < n; ++i) {
    const double u = unit(key, static_cast<uint64_t>(first + i));
    // Norm gains near 1; router rows with RMS 1/sqrt(D), so router logits have RMS ~1; biases a small
    // shift next to q, k, v of RMS ~1.
    if (id.kind == TensorKind::router)
      dst[i] = static_cast<float>((2.0 * u - 1.0) * std::sqrt(3.0 / static_cast<double>(cfg_.hidden_size)));
    else if (bias)
      dst[i] = static_cast<float>(0.2 * u - 0.1);
    else
      dst[i] = static_cast<float>(0.9 + 0.2 * u);
  }
  bytes_read_ += 4 * n;
}

std::unique_ptr<WeightSource> default_model() {
  return std::make_unique<SyntheticModel>(chip::model_preset("tiny"), 1, "built-in tiny (seed 1)");
}

}  // namespace lpurt::io
