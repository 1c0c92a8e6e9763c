#pragma once
/// \file
/// Where a model's configuration and weights come from: an HDF5 model file (ModelFile) or the built-in
/// deterministic generator (SyntheticModel, used by `gen-model` and as the default model). A loader
/// reads exactly the slices a chip holds, straight into the chip's buffers.
///
/// Example usage:
/// \code
///   auto source = lpurt::io::ModelFile::open("model.h5");     // validates against SPEC
///   lpurt::chip::Shard shard(source->config(), range, shape);
///   lpurt::io::load_shard(*source, shard);                   // hyperslab reads of the chip's slices only
/// \endcode

#include <cstdint>
#include <memory>
#include <string>

#include "chip/model_config.hpp"
#include "chip/shard.hpp"

namespace lpurt::io {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const chip::ModelConfig& config() const = 0;
  /// False for a configuration-only file (`gen-model --config-only`).
  virtual bool has_weights() const = 0;
  /// A name for messages: the file path or "built-in tiny (seed 1)".
  virtual std::string name() const = 0;

  /// int8 weight of a quantized matrix, rows [row_begin, row_end) x cols [col_begin, col_end), into
  /// dst: int8 [row_end - row_begin, col_end - col_begin] row-major.
  virtual void read_weight(const chip::TensorId& id, int64_t row_begin, int64_t row_end, int64_t col_begin,
                           int64_t col_end, int8_t* dst) = 0;
  /// Per-row scales of a quantized matrix, rows [row_begin, row_end), into dst: float [row_end - row_begin].
  virtual void read_scale(const chip::TensorId& id, int64_t row_begin, int64_t row_end, float* dst) = 0;
  /// Rows [row_begin, row_end) of a float tensor (norm gain, bias or router), every column, into
  /// dst: float [row_end - row_begin, cols].
  virtual void read_floats(const chip::TensorId& id, int64_t row_begin, int64_t row_end, float* dst) = 0;

  /// Payload bytes read so far (weights, scales and floats), so tests can prove a rank read only its share.
  int64_t bytes_read() const { return bytes_read_; }

 protected:
  int64_t bytes_read_ = 0;
};

/// Fills every weight of `shard` from `source`, reading only the slices the shard's range holds.
void load_shard(WeightSource& source, chip::Shard& shard);

/// The built-in generator: deterministic weights from (preset shape, seed), scaled so that activations
/// stay O(1) through the layers and generated tokens vary. Each value is a pure function of
/// (seed, tensor, index), so any slice can be produced without the rest of the model. With tied
/// embeddings the lm_head reads give the embedding's values.
class SyntheticModel final : public WeightSource {
 public:
  SyntheticModel(const chip::ModelConfig& cfg, uint64_t seed, std::string name);
  const chip::ModelConfig& config() const override { return cfg_; }
  bool has_weights() const override { return true; }
  std::string name() const override { return name_; }
  void read_weight(const chip::TensorId& id, int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end,
                   int8_t* dst) override;
  void read_scale(const chip::TensorId& id, int64_t row_begin, int64_t row_end, float* dst) override;
  void read_floats(const chip::TensorId& id, int64_t row_begin, int64_t row_end, float* dst) override;

 private:
  chip::ModelConfig cfg_;
  uint64_t seed_;
  std::string name_;
};

/// The model `run` and `plan` use when no --model is given: preset "tiny", seed 1.
std::unique_ptr<WeightSource> default_model();

}  // namespace lpurt::io
