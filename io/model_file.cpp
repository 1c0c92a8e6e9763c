#include "io/model_file.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "chip/cost_model.hpp"
#include "chip/error.hpp"
#include "io/atomic_file.hpp"
#include "io/error.hpp"

namespace lpurt::io {

using chip::TensorId;
using detail::check;
using detail::Handle;

namespace {

std::string dims_text(const std::vector<hsize_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

Handle open_attribute(hid_t object, const std::string& name, const std::string& file) {
  if (!detail::attribute_exists(object, name)) throw FileError(file + ": missing root attribute \"" + name + "\"");
  return Handle(check(H5Aopen(object, name.c_str(), H5P_DEFAULT), file + ": cannot open attribute " + name), H5Aclose);
}

void check_scalar(hid_t attr, const std::string& name, const std::string& file) {
  Handle space(check(H5Aget_space(attr), "H5Aget_space"), H5Sclose);
  if (H5Sget_simple_extent_npoints(space.get()) != 1)
    throw FileError(file + ": root attribute \"" + name + "\" must be a scalar");
}

int64_t read_int_attribute(hid_t root, const std::string& name, const std::string& file) {
  Handle attr = open_attribute(root, name, file);
  Handle type(check(H5Aget_type(attr.get()), "H5Aget_type"), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_INTEGER)
    throw FileError(file + ": root attribute \"" + name + "\" must be an integer");
  check_scalar(attr.get(), name, file);
  int64_t value = 0;
  check(H5Aread(attr.get(), H5T_NATIVE_INT64, &value), file + ": cannot read attribute " + name);
  return value;
}

double read_float_attribute(hid_t root, const std::string& name, const std::string& file) {
  Handle attr = open_attribute(root, name, file);
  Handle type(check(H5Aget_type(attr.get()), "H5Aget_type"), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_FLOAT && cls != H5T_INTEGER)
    throw FileError(file + ": root attribute \"" + name + "\" must be a number");
  check_scalar(attr.get(), name, file);
  double value = 0;
  check(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value), file + ": cannot read attribute " + name);
  return value;
}

std::string read_string_attribute(hid_t root, const std::string& name, const std::string& file) {
  Handle attr = open_attribute(root, name, file);
  Handle type(check(H5Aget_type(attr.get()), "H5Aget_type"), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING)
    throw FileError(file + ": root attribute \"" + name + "\" must be a string");
  check_scalar(attr.get(), name, file);
  // Read with a memory type built from the attribute's own (variable or fixed length, ASCII or UTF-8):
  // HDF5 does not convert between those.
  Handle mem(check(H5Tcopy(type.get()), "H5Tcopy"), H5Tclose);
  if (H5Tis_variable_str(type.get()) > 0) {
    char* text = nullptr;
    check(H5Aread(attr.get(), mem.get(), &text), file + ": cannot read attribute " + name);
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  std::vector<char> buf(H5Tget_size(type.get()) + 1, '\0');
  check(H5Aread(attr.get(), mem.get(), buf.data()), file + ": cannot read attribute " + name);
  return std::string(buf.data());
}

/// A format-2 attribute: its value when present, else SPEC's default.
int64_t read_optional_int(hid_t root, const std::string& name, int64_t fallback, const std::string& file) {
  return detail::attribute_exists(root, name) ? read_int_attribute(root, name, file) : fallback;
}

/// A 0/1 flag attribute.
bool read_optional_flag(hid_t root, const std::string& name, bool fallback, const std::string& file) {
  const int64_t v = read_optional_int(root, name, fallback ? 1 : 0, file);
  if (v != 0 && v != 1)
    throw FileError(file + ": root attribute \"" + name + "\" is " + std::to_string(v) + ", expected 0 or 1");
  return v == 1;
}

void write_attribute(hid_t root, const std::string& name, hid_t file_type, hid_t mem_type, const void* value) {
  Handle space(check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  Handle attr(check(H5Acreate2(root, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                    "cannot create attribute " + name),
              H5Aclose);
  check(H5Awrite(attr.get(), mem_type, value), "cannot write attribute " + name);
}

void write_string_attribute(hid_t root, const std::string& name, const std::string& value) {
  const Handle type = detail::utf8_string_type();
  const char* text = value.c_str();
  write_attribute(root, name, type.get(), type.get(), &text);
}

/// Bytes of one chunk of a tensor dataset: large enough that a read is a few big I/Os, small enough that
/// a bit flip costs one chunk and HDF5 verifies each chunk's checksum in cache.
constexpr int64_t chunk_bytes = int64_t{1} << 20;

/// Rows of one chunk of a tensor with `row_bytes` per row: whole rows, so that a row block (a
/// pipeline stage's, or a vocabulary split's) reads whole chunks and a column block reads each chunk once.
/// Chunks split the rows evenly: HDF5 stores the last chunk whole, so a short one would waste its rest.
int64_t chunk_rows(int64_t n_rows, int64_t row_bytes) {
  const int64_t n_chunks = chip::ceil_div(n_rows * row_bytes, chunk_bytes);
  return std::max<int64_t>(1, chip::ceil_div(n_rows, n_chunks));
}

/// A tensor dataset, chunked in whole rows with HDF5's Fletcher32 checksum on every chunk: a flipped bit
/// in the file fails the read of that chunk instead of changing a weight.
void create_dataset(hid_t file, const std::string& path, hid_t type, const std::vector<hsize_t>& dims,
                    const std::string& file_name) {
  Handle space(check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), "H5Screate_simple"),
               H5Sclose);
  Handle lcpl(check(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"), H5Pclose);
  check(H5Pset_create_intermediate_group(lcpl.get(), 1), "H5Pset_create_intermediate_group");
  Handle dcpl(check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
  const auto row_bytes = static_cast<int64_t>(H5Tget_size(type)) * (dims.size() == 2 ? static_cast<int64_t>(dims[1]) : 1);
  std::vector<hsize_t> chunk = dims;
  chunk[0] = static_cast<hsize_t>(chunk_rows(static_cast<int64_t>(dims[0]), row_bytes));
  check(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), file_name + ": chunking " + path);
  check(H5Pset_fletcher32(dcpl.get()), file_name + ": checksum filter for " + path);
  Handle ds(check(H5Dcreate2(file, path.c_str(), type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
                  file_name + ": cannot create dataset " + path),
            H5Dclose);
}

void write_block(hid_t file, const std::string& path, hid_t mem_type, int64_t row_begin, int64_t n_rows,
                 int64_t n_cols, bool two_dimensional, const void* data, const std::string& file_name) {
  Handle ds(check(H5Dopen2(file, path.c_str(), H5P_DEFAULT), file_name + ": cannot open " + path), H5Dclose);
  Handle file_space(check(H5Dget_space(ds.get()), "H5Dget_space"), H5Sclose);
  const hsize_t start[2] = {static_cast<hsize_t>(row_begin), 0};
  const hsize_t count[2] = {static_cast<hsize_t>(n_rows), static_cast<hsize_t>(n_cols)};
  const int rank = two_dimensional ? 2 : 1;
  check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), "H5Sselect_hyperslab");
  Handle mem_space(check(H5Screate_simple(rank, count, nullptr), "H5Screate_simple"), H5Sclose);
  check(H5Dwrite(ds.get(), mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, data),
        file_name + ": cannot write " + path);
  check(ds.close(), file_name + ": cannot close " + path + " after writing it");
}

}  // namespace

std::unique_ptr<ModelFile> ModelFile::open(const std::string& path) {
  std::unique_ptr<ModelFile> f(new ModelFile(path, detail::open_file_read(path)));
  detail::check_hard_links(f->file_.get(), path);  // before any path is followed
  f->read_config();
  f->validate_datasets();
  return f;
}

void ModelFile::read_config() {
  Handle root = detail::open_group(file_.get(), "/", path_);
  const hid_t r = root.get();
  const std::string format = read_string_attribute(r, "format", path_);
  if (format != "lpurt-model")
    throw FileError(path_ + ": root attribute format is \"" + format + "\", expected \"lpurt-model\"");
  const int64_t version = read_int_attribute(r, "format_version", path_);
  if (version < 1 || version > model_format_version)
    throw FileError(path_ + ": format_version is " + std::to_string(version) + ", expected 1 .. " +
                    std::to_string(model_format_version));
  try {
    cfg_.architecture = chip::parse_architecture(read_string_attribute(r, "architecture", path_));
  } catch (const chip::ConfigError& e) {
    throw FileError(path_ + ": " + e.what());
  }
  cfg_.vocab_size = read_int_attribute(r, "vocab_size", path_);
  cfg_.hidden_size = read_int_attribute(r, "hidden_size", path_);
  cfg_.intermediate_size = read_int_attribute(r, "intermediate_size", path_);
  cfg_.n_layers = read_int_attribute(r, "n_layers", path_);
  cfg_.n_heads = read_int_attribute(r, "n_heads", path_);
  cfg_.n_kv_heads = read_int_attribute(r, "n_kv_heads", path_);
  cfg_.max_seq_len = read_int_attribute(r, "max_seq_len", path_);
  cfg_.rope_theta = static_cast<float>(read_float_attribute(r, "rope_theta", path_));
  cfg_.norm_eps = static_cast<float>(read_float_attribute(r, "norm_eps", path_));
  if (cfg_.is_moe()) {
    cfg_.n_experts = read_int_attribute(r, "n_experts", path_);
    cfg_.n_experts_per_token = read_int_attribute(r, "n_experts_per_token", path_);
  }
  // Format 2's attributes are optional with format 1's behaviour as the default, so a version-1 file
  // (which has none of them) reads as before.
  cfg_.explicit_head_dim = read_optional_int(r, "head_dim", 0, path_);
  cfg_.attention_bias = read_optional_flag(r, "attention_bias", false, path_);
  cfg_.qk_norm = read_optional_flag(r, "qk_norm", false, path_);
  cfg_.tie_word_embeddings = read_optional_flag(r, "tie_word_embeddings", false, path_);
  cfg_.moe_intermediate_size = read_optional_int(r, "moe_intermediate_size", 0, path_);
  cfg_.norm_topk_prob = read_optional_flag(r, "norm_topk_prob", true, path_);
  try {
    if (detail::attribute_exists(r, "rope_scaling_type")) {
      chip::RopeScaling& rs = cfg_.rope_scaling;
      rs.type = chip::parse_rope_scaling(read_string_attribute(r, "rope_scaling_type", path_));
      if (rs.type == chip::RopeScalingType::llama3) {
        rs.factor = read_float_attribute(r, "rope_scaling_factor", path_);
        rs.low_freq_factor = read_float_attribute(r, "rope_low_freq_factor", path_);
        rs.high_freq_factor = read_float_attribute(r, "rope_high_freq_factor", path_);
        rs.original_max_position = read_int_attribute(r, "rope_original_max_position", path_);
      }
    }
    cfg_.validate();
  } catch (const chip::ConfigError& e) {
    throw FileError(path_ + ": invalid model configuration: " + e.what());
  }
}

void ModelFile::validate_datasets() {
  // A configuration-only file has no tensors at all; a file with any tensor must have all of them.
  has_weights_ = detail::link_exists(file_.get(), "/embedding");
  if (!has_weights_) {
    for (const auto& id : chip::model_tensors(cfg_)) {
      const std::string p = chip::tensor_path(id);
      if (detail::link_exists(file_.get(), p))
        throw FileError(path_ + ": has " + p + " but no /embedding: missing dataset /embedding/weight");
    }
    return;
  }
  auto expect = [&](const std::string& p, detail::Dtype dtype, const std::vector<hsize_t>& dims) {
    Handle ds = detail::open_dataset(file_.get(), p, path_);
    const detail::Dtype got = detail::dataset_dtype(ds.get());
    if (got != dtype)
      throw FileError(path_ + ": dataset " + p + " has dtype " + detail::dtype_name(got) + ", expected " +
                      detail::dtype_name(dtype));
    const auto got_dims = detail::dataset_dims(ds.get());
    if (got_dims != dims)
      throw FileError(path_ + ": dataset " + p + " has shape " + dims_text(got_dims) + ", expected " +
                      dims_text(dims));
  };
  for (const auto& id : chip::model_tensors(cfg_)) {
    const chip::TensorShape s = chip::tensor_shape(cfg_, id);
    const std::string p = chip::tensor_path(id);
    const auto rows = static_cast<hsize_t>(s.rows);
    const auto cols = static_cast<hsize_t>(s.cols);
    if (chip::is_quantized_matrix(id.kind)) {
      expect(p + "/weight", detail::Dtype::int8, {rows, cols});
      expect(p + "/scale", detail::Dtype::float32, {rows});
    } else if (id.kind == chip::TensorKind::router) {
      expect(p, detail::Dtype::float32, {rows, cols});
    } else {
      expect(p, detail::Dtype::float32, {rows});
    }
  }
}

void ModelFile::read_block(const std::string& dataset, hid_t mem_type, int64_t row_begin, int64_t row_end,
                           int64_t col_begin, int64_t col_end, bool two_dimensional, void* dst) {
  if (!has_weights_)
    throw FileError(path_ + ": holds only a configuration (written with --config-only); " + dataset +
                    " is needed for a functional run; a configuration-only file can be planned (lpurt plan) but not run");
  Handle ds = detail::open_dataset(file_.get(), dataset, path_);
  Handle file_space(check(H5Dget_space(ds.get()), "H5Dget_space"), H5Sclose);
  const hsize_t start[2] = {static_cast<hsize_t>(row_begin), static_cast<hsize_t>(col_begin)};
  const hsize_t count[2] = {static_cast<hsize_t>(row_end - row_begin), static_cast<hsize_t>(col_end - col_begin)};
  const int rank = two_dimensional ? 2 : 1;
  if (count[0] == 0 || (two_dimensional && count[1] == 0)) return;
  check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
        path_ + ": cannot select rows of " + dataset);
  Handle mem_space(check(H5Screate_simple(rank, count, nullptr), "H5Screate_simple"), H5Sclose);
  check(H5Dread(ds.get(), mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, dst),
        path_ + ": cannot read dataset " + dataset + ": the file is corrupt (a chunk fails its checksum, or the file "
        "is truncated)");
}

void ModelFile::read_weight(const TensorId& id, int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end,
                            int8_t* dst) {
  read_block(chip::tensor_path(chip::stored_tensor(cfg_, id)) + "/weight", H5T_NATIVE_INT8, row_begin, row_end, col_begin, col_end, true, dst);
  bytes_read_ += (row_end - row_begin) * (col_end - col_begin);
}

void ModelFile::read_scale(const TensorId& id, int64_t row_begin, int64_t row_end, float* dst) {
  const std::string dataset = chip::tensor_path(chip::stored_tensor(cfg_, id)) + "/scale";
  read_block(dataset, H5T_NATIVE_FLOAT, row_begin, row_end, 0, 1, false, dst);
  check_values(dataset, dst, row_end - row_begin, row_begin, 1, true);
  bytes_read_ += 4 * (row_end - row_begin);
}

void ModelFile::read_floats(const TensorId& id, int64_t row_begin, int64_t row_end, float* dst) {
  const chip::TensorShape s = chip::tensor_shape(cfg_, id);
  const bool matrix = id.kind == chip::TensorKind::router;
  read_block(chip::tensor_path(id), H5T_NATIVE_FLOAT, row_begin, row_end, 0, s.cols, matrix, dst);
  check_values(chip::tensor_path(id), dst, (row_end - row_begin) * s.cols, row_begin, matrix ? s.cols : 1, false);
  bytes_read_ += 4 * (row_end - row_begin) * s.cols;
}

void ModelFile::check_values(const std::string& dataset, const float* values, int64_t n, int64_t first_row,
                             int64_t n_cols, bool positive) const {
  for (int64_t i = 0; i < n; ++i) {
    const float v = values[i];
    if (std::isfinite(v) && (!positive || v > 0)) continue;
    const int64_t row = first_row + i / n_cols;
    const std::string index =
        n_cols > 1 ? std::to_string(row) + ", " + std::to_string(i % n_cols) : std::to_string(row);
    throw FileError(path_ + ": dataset " + dataset + "[" + index + "] = " + format_number(v) + ", expected " +
                    (positive ? "a finite scale > 0" : "a finite value"));
  }
}

void ModelFile::check_float_data() {
  if (!has_weights_) return;
  std::vector<float> values;
  for (const auto& id : chip::model_tensors(cfg_)) {
    const chip::TensorShape s = chip::tensor_shape(cfg_, id);
    if (chip::is_quantized_matrix(id.kind)) {
      values.resize(static_cast<std::size_t>(s.rows));
      read_scale(id, 0, s.rows, values.data());
    } else {
      values.resize(static_cast<std::size_t>(s.rows * s.cols));
      read_floats(id, 0, s.rows, values.data());
    }
  }
}

ModelWriter::ModelWriter(const std::string& path, const chip::ModelConfig& cfg)
    : path_(path), cfg_(cfg), file_(detail::create_file(path)) {
  Handle root = detail::open_group(file_.get(), "/", path_);
  const hid_t r = root.get();
  write_string_attribute(r, "format", "lpurt-model");
  const int64_t version = model_format_version;
  write_attribute(r, "format_version", H5T_STD_I64LE, H5T_NATIVE_INT64, &version);
  write_string_attribute(r, "architecture", chip::architecture_name(cfg.architecture));
  auto write_int = [&](const char* name, int64_t v) { write_attribute(r, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v); };
  write_int("vocab_size", cfg.vocab_size);
  write_int("hidden_size", cfg.hidden_size);
  write_int("intermediate_size", cfg.intermediate_size);
  write_int("n_layers", cfg.n_layers);
  write_int("n_heads", cfg.n_heads);
  write_int("n_kv_heads", cfg.n_kv_heads);
  write_int("max_seq_len", cfg.max_seq_len);
  if (cfg.is_moe()) {
    write_int("n_experts", cfg.n_experts);
    write_int("n_experts_per_token", cfg.n_experts_per_token);
  }
  write_attribute(r, "rope_theta", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &cfg.rope_theta);
  write_attribute(r, "norm_eps", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &cfg.norm_eps);
  // Format 2: every attribute written, defaults included, so a reader never has to guess; head_dim only
  // when the model gives it, so that D / H stays checked for the others.
  auto write_double = [&](const char* name, double v) { write_attribute(r, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v); };
  if (cfg.explicit_head_dim != 0) write_int("head_dim", cfg.explicit_head_dim);
  write_int("attention_bias", cfg.attention_bias ? 1 : 0);
  write_int("qk_norm", cfg.qk_norm ? 1 : 0);
  write_int("tie_word_embeddings", cfg.tie_word_embeddings ? 1 : 0);
  if (cfg.is_moe()) {
    write_int("moe_intermediate_size", cfg.ffn_size());
    write_int("norm_topk_prob", cfg.norm_topk_prob ? 1 : 0);
  }
  write_string_attribute(r, "rope_scaling_type", chip::rope_scaling_name(cfg.rope_scaling.type));
  if (cfg.rope_scaling.type == chip::RopeScalingType::llama3) {
    write_double("rope_scaling_factor", cfg.rope_scaling.factor);
    write_double("rope_low_freq_factor", cfg.rope_scaling.low_freq_factor);
    write_double("rope_high_freq_factor", cfg.rope_scaling.high_freq_factor);
    write_int("rope_original_max_position", cfg.rope_scaling.original_max_position);
  }
}

void ModelWriter::write_weights(WeightSource& source, int64_t block_bytes,
                                const std::function<void(int64_t, int64_t)>& progress) {
  const auto tensors = chip::model_tensors(cfg_);
  std::vector<int8_t> weight_block;
  std::vector<float> float_block;
  int64_t done = 0;
  for (const auto& id : tensors) {
    const chip::TensorShape s = chip::tensor_shape(cfg_, id);
    const std::string p = chip::tensor_path(id);
    const auto rows = static_cast<hsize_t>(s.rows);
    const auto cols = static_cast<hsize_t>(s.cols);
    if (chip::is_quantized_matrix(id.kind)) {
      create_dataset(file_.get(), p + "/weight", H5T_STD_I8LE, {rows, cols}, path_);
      create_dataset(file_.get(), p + "/scale", H5T_IEEE_F32LE, {rows}, path_);
      // Whole chunks per block: a chunk written in parts would be read back and rewritten.
      const int64_t rows_per_chunk = chunk_rows(s.rows, s.cols);
      const int64_t rows_per_block = rows_per_chunk * std::max<int64_t>(1, block_bytes / (rows_per_chunk * s.cols));
      weight_block.resize(static_cast<std::size_t>(std::min(rows_per_block, s.rows) * s.cols));
      for (int64_t r0 = 0; r0 < s.rows; r0 += rows_per_block) {
        const int64_t r1 = std::min(s.rows, r0 + rows_per_block);
        source.read_weight(id, r0, r1, 0, s.cols, weight_block.data());
        write_block(file_.get(), p + "/weight", H5T_NATIVE_INT8, r0, r1 - r0, s.cols, true, weight_block.data(), path_);
      }
      float_block.resize(static_cast<std::size_t>(s.rows));
      source.read_scale(id, 0, s.rows, float_block.data());
      write_block(file_.get(), p + "/scale", H5T_NATIVE_FLOAT, 0, s.rows, 1, false, float_block.data(), path_);
    } else {
      const bool matrix = id.kind == chip::TensorKind::router;
      create_dataset(file_.get(), p, H5T_IEEE_F32LE, matrix ? std::vector<hsize_t>{rows, cols} : std::vector<hsize_t>{rows},
                     path_);
      float_block.resize(static_cast<std::size_t>(s.rows * s.cols));
      source.read_floats(id, 0, s.rows, float_block.data());
      write_block(file_.get(), p, H5T_NATIVE_FLOAT, 0, s.rows, s.cols, matrix, float_block.data(), path_);
    }
    ++done;
    if (progress) progress(done, static_cast<int64_t>(tensors.size()));
  }
}

void ModelWriter::close() {
  if (file_.get() < 0) return;
  check(H5Fflush(file_.get(), H5F_SCOPE_GLOBAL), path_ + ": cannot flush");
  // The last writes can still fail here; the caller renames the file into place only if they did not.
  check(file_.close(), path_ + ": cannot close the file (its last writes failed)");
}

void write_model_file(const std::string& path, WeightSource& source, bool config_only, bool force,
                      const std::function<void(int64_t, int64_t)>& progress,
                      const std::function<void(const std::string&)>& finish) {
  write_atomically(path, force, [&](const std::string& tmp) {
    ModelWriter writer(tmp, source.config());
    if (!config_only) writer.write_weights(source, int64_t{8} << 20, progress);
    writer.close();
    if (finish) finish(tmp);
  });
}

}  // namespace lpurt::io
