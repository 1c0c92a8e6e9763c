#pragma once
/// \file
/// HDF5 model files, SPEC "Model file (HDF5), format version 1" and "format version 2" (which extends it).
/// ModelFile::open validates everything (format, version, every attribute, every dataset's dtype and
/// shape; every link a hard link) before anything runs; reads are hyperslabs straight into the caller's
/// buffer, and float values (scales, norm gains, router) are checked finite as they are read.
/// ModelWriter writes every tensor chunked in whole rows with HDF5's Fletcher32 checksum per chunk, so a
/// corrupted chunk fails its read; files written without it (older lpurt, other tools) still read.
/// ModelWriter creates a file and writes it tensor by tensor, in row blocks, so that a large model is
/// never held in memory whole.

#include <hdf5.h>

#include <functional>
#include <memory>
#include <string>

#include "io/detail/h5.hpp"
#include "io/weight_source.hpp"

namespace lpurt::io {

/// The version ModelWriter writes; ModelFile reads every version from 1 to this one.
inline constexpr int model_format_version = 2;

class ModelFile final : public WeightSource {
 public:
  /// Opens and validates `path`. Throws FileError naming the file, the attribute or dataset, and what was
  /// expected; a configuration error (e.g. hidden_size not a multiple of n_heads) names the file too.
  static std::unique_ptr<ModelFile> open(const std::string& path);

  const chip::ModelConfig& config() const override { return cfg_; }
  bool has_weights() const override { return has_weights_; }
  std::string name() const override { return path_; }
  void read_weight(const chip::TensorId& id, int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end,
                   int8_t* dst) override;
  void read_scale(const chip::TensorId& id, int64_t row_begin, int64_t row_end, float* dst) override;
  void read_floats(const chip::TensorId& id, int64_t row_begin, int64_t row_end, float* dst) override;
  /// Reads every float dataset (scales, norm gains, router) and throws FileError naming the file, dataset,
  /// index and value of the first that is not finite, or a scale that is not > 0 (check-model; loads
  /// check the slices they read the same way). A few bytes per weight row: cheap next to the weights.
  void check_float_data();

 private:
  ModelFile(std::string path, detail::Handle file) : path_(std::move(path)), file_(std::move(file)) {}
  void read_config();
  void validate_datasets();
  void read_block(const std::string& dataset, hid_t mem_type, int64_t row_begin, int64_t row_end, int64_t col_begin,
                  int64_t col_end, bool two_dimensional, void* dst);
  /// Throws FileError at the first of `n` values (rows from `first_row`, `n_cols` per row) that is not
  /// finite, or with `positive`, not > 0.
  void check_values(const std::string& dataset, const float* values, int64_t n, int64_t first_row, int64_t n_cols,
                    bool positive) const;

  std::string path_;
  detail::Handle file_;
  chip::ModelConfig cfg_;
  bool has_weights_ = false;
};

class ModelWriter {
 public:
  /// Creates `path` (truncating) and writes the root attributes of `cfg`.
  ModelWriter(const std::string& path, const chip::ModelConfig& cfg);
  /// Copies every tensor from `source`, in row blocks of at most `block_bytes`; `progress` is called
  /// after each tensor with (tensors done, tensors total).
  void write_weights(WeightSource& source, int64_t block_bytes,
                     const std::function<void(int64_t, int64_t)>& progress = {});
  void close();

 private:
  std::string path_;
  chip::ModelConfig cfg_;
  detail::Handle file_;
};

/// Writes a model file at `path` atomically (see atomic_file.hpp); an existing file is replaced only with
/// `force`. With `config_only`, only the root attributes are written. `finish`, if given, is called with
/// the temporary file's path once the model is written and closed, before the rename: to add to the file
/// (e.g. write_embedded_tokenizer) within the same atomic write.
void write_model_file(const std::string& path, WeightSource& source, bool config_only, bool force,
                      const std::function<void(int64_t, int64_t)>& progress = {},
                      const std::function<void(const std::string&)>& finish = {});

}  // namespace lpurt::io
