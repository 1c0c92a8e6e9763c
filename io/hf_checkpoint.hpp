#pragma once
/// \file
/// A Hugging Face checkpoint directory as a WeightSource (SPEC "Importing checkpoints"): `config.json`
/// (io/hf_config.hpp) and `model.safetensors`, or the shards that `model.safetensors.index.json` names,
/// with tensors in float32, float16 or bfloat16. HfCheckpoint::open checks every tensor's presence,
/// dtype, shape and byte range against the configuration before anything is read or written; the reads
/// then convert and quantize exactly the rows asked for (pread of those rows only: memory holds a row
/// block, never a shard), so io::write_model_file turns a checkpoint into a model file a row block at a
/// time, with its atomic write, checksums and progress.
///
/// Conversions (SPEC): a matrix row becomes float32, then int8 with scale max|row| / 127 and
/// q = clamp(rint(v / scale), -127, 127) (an all-zero row: scale 1, zeros); vectors (norms, biases,
/// router) stay float32. q_proj and k_proj rows, their biases and the q_norm / k_norm gains go from
/// Hugging Face's rotate-half order to SPEC's interleaved pairs: within each head, HF row r < hd/2 is
/// row 2r, HF row r >= hd/2 is row 2(r - hd/2) + 1. A value that is not finite fails the read, naming
/// the file, tensor and index.
///
/// Example usage:
/// \code
///   auto checkpoint = lpurt::io::HfCheckpoint::open("Qwen3-0.6B");   // validates, reads no weights
///   lpurt::io::import_checkpoint(*checkpoint, "qwen3-0.6b.h5", false);
/// \endcode

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/detail/safetensors.hpp"
#include "io/error.hpp"
#include "io/weight_source.hpp"

namespace lpurt::io {

/// A fault of the checkpoint found while its weights are read (a value that is not finite, a file that
/// shrank or fails to read): an input error, reported as it is rather than as a failed write.
class CheckpointError : public FileError {
 public:
  using FileError::FileError;
};

class HfCheckpoint final : public WeightSource {
 public:
  /// Opens and validates the checkpoint in `directory`. Throws FileError naming the file and the tensor
  /// (or config.json's field) at fault: a missing or extra tensor, a dtype other than F32/F16/BF16, a
  /// shape that disagrees with config.json, a header whose byte ranges overlap, leave holes or run past
  /// the end of the file, an index that names a tensor its shard lacks (or the other way round).
  static std::unique_ptr<HfCheckpoint> open(const std::string& directory);

  const chip::ModelConfig& config() const override { return cfg_; }
  bool has_weights() const override { return true; }
  std::string name() const override { return directory_; }
  void read_weight(const chip::TensorId& id, int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end,
                   int8_t* dst) override;
  void read_scale(const chip::TensorId& id, int64_t row_begin, int64_t row_end, float* dst) override;
  void read_floats(const chip::TensorId& id, int64_t row_begin, int64_t row_end, float* dst) override;

  /// Safetensors files read (1, or the shards of the index).
  int64_t n_files() const { return static_cast<int64_t>(files_.size()); }
  /// Bytes of the model's tensors in the checkpoint.
  int64_t tensor_bytes() const { return tensor_bytes_; }
  /// Bytes of the checkpoint's largest tensor: what "one tensor at a time" is measured against.
  int64_t largest_tensor_bytes() const { return largest_tensor_bytes_; }
  /// The dtypes of the checkpoint's tensors, e.g. "bf16" or "bf16, f32".
  std::string dtypes() const;

 private:
  /// Where a tensor of the model lies in the checkpoint.
  struct Source {
    std::string name;  ///< Hugging Face's tensor name
    int64_t file = 0;  ///< index into files_
    detail::SafetensorsTensor tensor;
  };

  explicit HfCheckpoint(std::string directory) : directory_(std::move(directory)) {}
  void open_files();
  void map_tensors();
  const Source& source_of(const chip::TensorId& id) const;
  /// Reads rows [row_begin, row_end) of `id` (SPEC's row order) as float32 into rows_ and calls
  /// `row_done(row, values)` for each, in parallel over rows. Throws naming the first non-finite value.
  void for_each_row(const chip::TensorId& id, int64_t row_begin, int64_t row_end,
                    const std::function<void(int64_t, const float*)>& row_done);

  std::string directory_;
  chip::ModelConfig cfg_;
  std::vector<detail::SafetensorsFile> files_;
  std::unordered_map<std::string, Source> sources_;  ///< by chip::tensor_path of the stored tensor
  int64_t tensor_bytes_ = 0;
  int64_t largest_tensor_bytes_ = 0;

  std::vector<unsigned char> raw_;  ///< [rows of a block, cols] in the checkpoint's dtype
  /// The scales computed by the last read_weight calls of one tensor, so that read_scale of its rows
  /// does not read them again.
  std::string scales_tensor_;
  std::vector<float> scales_;         ///< [rows]
  std::vector<unsigned char> known_;  ///< [rows] 1 where scales_ holds the row's scale
};

/// Writes `checkpoint` as a model file at `path` (atomically; an existing file is replaced only with
/// `force`). `progress` as io::write_model_file's. Throws CheckpointError for a fault of the checkpoint
/// and FileError(ExitCode::io) for one of the write; either way no file is left at `path`.
void import_checkpoint(HfCheckpoint& checkpoint, const std::string& path, bool force,
                       const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace lpurt::io
