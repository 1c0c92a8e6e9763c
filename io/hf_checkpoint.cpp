#include "io/hf_checkpoint.hpp"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "chip/cost_model.hpp"
#include "chip/error.hpp"
#include "chip/kernels.hpp"
#include "io/atomic_file.hpp"
#include "io/error.hpp"
#include "io/hf_config.hpp"
#include "io/model_file.hpp"
#include "io/text_file.hpp"
#include "io/tokenizer.hpp"

namespace lpurt::io {

using chip::TensorId;
using chip::TensorKind;

namespace {

/// Raw bytes read and converted at once: large enough for few, long reads, small enough that memory
/// stays far below one large tensor.
constexpr int64_t block_bytes = int64_t{16} << 20;
/// An index lists every tensor once: tens of thousands of lines for the largest models.
constexpr int64_t max_index_bytes = int64_t{256} << 20;

const char* const single_file = "model.safetensors";
const char* const index_file = "model.safetensors.index.json";

std::string join(const std::string& directory, const std::string& name) {
  return (std::filesystem::path(directory) / name).string();
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// Hugging Face's name of a tensor of the model (transformers' modeling_*.py module names).
std::string hf_name(const chip::ModelConfig& c, const TensorId& id) {
  const std::string layer = "model.layers." + std::to_string(id.layer) + ".";
  const bool mixtral = c.architecture == chip::Architecture::mixtral;
  auto ffn = [&](const char* dense, const char* mixtral_expert) {
    if (id.expert < 0) return layer + "mlp." + dense + ".weight";
    const std::string e = std::to_string(id.expert);
    if (mixtral) return layer + "block_sparse_moe.experts." + e + "." + mixtral_expert + ".weight";
    return layer + "mlp.experts." + e + "." + dense + ".weight";
  };
  switch (id.kind) {
    case TensorKind::embedding: return "model.embed_tokens.weight";
    case TensorKind::final_norm: return "model.norm.weight";
    case TensorKind::lm_head: return "lm_head.weight";
    case TensorKind::attn_norm: return layer + "input_layernorm.weight";
    case TensorKind::ffn_norm: return layer + "post_attention_layernorm.weight";
    case TensorKind::wq: return layer + "self_attn.q_proj.weight";
    case TensorKind::wk: return layer + "self_attn.k_proj.weight";
    case TensorKind::wv: return layer + "self_attn.v_proj.weight";
    case TensorKind::wo: return layer + "self_attn.o_proj.weight";
    case TensorKind::wq_bias: return layer + "self_attn.q_proj.bias";
    case TensorKind::wk_bias: return layer + "self_attn.k_proj.bias";
    case TensorKind::wv_bias: return layer + "self_attn.v_proj.bias";
    case TensorKind::q_norm: return layer + "self_attn.q_norm.weight";
    case TensorKind::k_norm: return layer + "self_attn.k_norm.weight";
    case TensorKind::router: return layer + (mixtral ? "block_sparse_moe.gate.weight" : "mlp.gate.weight");
    case TensorKind::w_gate: return ffn("gate_proj", "w1");
    case TensorKind::w_up: return ffn("up_proj", "w3");
    case TensorKind::w_down: return ffn("down_proj", "w2");
  }
  LPURT_ASSERT(false);
}

/// The config.json fields a tensor's expected shape comes from, for messages.
std::string shape_origin(const chip::ModelConfig& c, TensorKind kind) {
  const std::string ffn = c.architecture == chip::Architecture::qwen3_moe ? "moe_intermediate_size" : "intermediate_size";
  switch (kind) {
    case TensorKind::embedding:
    case TensorKind::lm_head: return "vocab_size, hidden_size";
    case TensorKind::attn_norm:
    case TensorKind::ffn_norm:
    case TensorKind::final_norm: return "hidden_size";
    case TensorKind::wq: return "num_attention_heads x head_dim, hidden_size";
    case TensorKind::wk:
    case TensorKind::wv: return "num_key_value_heads x head_dim, hidden_size";
    case TensorKind::wo: return "hidden_size, num_attention_heads x head_dim";
    case TensorKind::wq_bias: return "num_attention_heads x head_dim";
    case TensorKind::wk_bias:
    case TensorKind::wv_bias: return "num_key_value_heads x head_dim";
    case TensorKind::q_norm:
    case TensorKind::k_norm: return "head_dim";
    case TensorKind::router:
      return std::string(c.architecture == chip::Architecture::mixtral ? "num_local_experts" : "num_experts") +
             ", hidden_size";
    case TensorKind::w_gate:
    case TensorKind::w_up: return ffn + ", hidden_size";
    case TensorKind::w_down: return "hidden_size, " + ffn;
  }
  LPURT_ASSERT(false);
}

/// q and k rows (and their biases and norm gains) are stored per head in rotate-half order by Hugging
/// Face and in interleaved pairs by SPEC.
bool rotate_half_order(TensorKind kind) {
  return kind == TensorKind::wq || kind == TensorKind::wk || kind == TensorKind::wq_bias ||
         kind == TensorKind::wk_bias || kind == TensorKind::q_norm || kind == TensorKind::k_norm;
}

/// The Hugging Face row of SPEC row `row`: within its head, SPEC row 2i is HF row i and SPEC row 2i + 1
/// is HF row hd/2 + i (the inverse of SPEC's HF r < hd/2 -> 2r, r >= hd/2 -> 2(r - hd/2) + 1).
int64_t hf_row(int64_t row, int64_t head_dim) {
  const int64_t head = row / head_dim, i = row % head_dim;
  return head * head_dim + (i % 2 == 0 ? i / 2 : head_dim / 2 + i / 2);
}

}  // namespace

std::unique_ptr<HfCheckpoint> HfCheckpoint::open(const std::string& directory) {
  std::error_code ec;
  if (!std::filesystem::is_directory(directory, ec))
    throw FileError(directory + ": not a directory (expected a Hugging Face checkpoint: config.json and " +
                    single_file + " or " + index_file + ")");
  std::unique_ptr<HfCheckpoint> c(new HfCheckpoint(directory));
  c->cfg_ = read_hf_config(join(directory, "config.json"));
  c->open_files();
  c->map_tensors();
  return c;
}

void HfCheckpoint::open_files() {
  const std::string single = join(directory_, single_file), index = join(directory_, index_file);
  std::error_code ec;
  const bool has_single = std::filesystem::exists(single, ec), has_index = std::filesystem::exists(index, ec);
  if (has_single && has_index)
    throw FileError(directory_ + ": has both " + single_file + " and " + index_file +
                    "; remove the one that is not current (lpurt will not guess)");
  if (!has_single && !has_index)
    throw FileError(directory_ + ": has neither " + single_file + " nor " + index_file +
                    " (lpurt reads safetensors checkpoints; convert a pytorch_model.bin one first)");
  if (has_single) {
    files_.push_back(detail::open_safetensors(single));
    return;
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(index, "safetensors index", max_index_bytes));
  } catch (const nlohmann::json::exception& e) {
    throw FileError(index + ": not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw FileError(index + ": expected a JSON object with a \"weight_map\" object (tensor name -> shard file)");
  std::map<std::string, std::string> shard_of;  // tensor name -> shard file name
  std::set<std::string> shards;
  for (const auto& item : j["weight_map"].items()) {
    if (!item.value().is_string())
      throw FileError(index + ": weight_map[\"" + item.key() + "\"] is " + item.value().dump() + ", expected a file name");
    const std::string shard = item.value().get<std::string>();
    // A file of this directory: no path (an index must not lead lpurt to read other files).
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
        shard.find('\0') != std::string::npos)
      throw FileError(index + ": weight_map[\"" + item.key() + "\"] is \"" + shard +
                      "\", expected the name of a file in " + directory_);
    shard_of.emplace(item.key(), shard);
    shards.insert(shard);
  }
  if (shards.empty()) throw FileError(index + ": weight_map lists no tensor");
  for (const std::string& shard : shards) {
    files_.push_back(detail::open_safetensors(join(directory_, shard)));
    for (const auto& tensor : files_.back().tensors) {
      const auto listed = shard_of.find(tensor.first);
      if (listed == shard_of.end())
        throw FileError(files_.back().path + ": holds tensor " + tensor.first + ", which " + index_file + " does not list");
      if (listed->second != shard)
        throw FileError(files_.back().path + ": holds tensor " + tensor.first + ", which " + index_file + " puts in " +
                        listed->second);
    }
  }
  for (const auto& [tensor, shard] : shard_of) {
    const auto i = static_cast<std::size_t>(std::distance(shards.begin(), shards.find(shard)));
    if (files_[i].tensors.count(tensor) == 0)
      throw FileError(index + ": puts tensor " + tensor + " in " + shard + ", which does not hold it");
  }
}

void HfCheckpoint::map_tensors() {
  std::map<std::string, int64_t> unclaimed;  // every tensor of the checkpoint -> its file
  for (std::size_t i = 0; i < files_.size(); ++i)
    for (const auto& tensor : files_[i].tensors) unclaimed.emplace(tensor.first, static_cast<int64_t>(i));
  const std::string listing = files_.size() == 1 ? files_.front().path : join(directory_, index_file);
  for (const TensorId& id : chip::model_tensors(cfg_)) {
    const std::string name = hf_name(cfg_, id);
    const auto found = unclaimed.find(name);
    if (found == unclaimed.end())
      throw FileError(listing + ": has no tensor " + name + ", which a " + chip::architecture_name(cfg_.architecture) +
                      " model of this config.json has" +
                      (id.kind == TensorKind::lm_head ? " (tie_word_embeddings is false)" : std::string()));
    const detail::SafetensorsFile& file = files_[static_cast<std::size_t>(found->second)];
    const detail::SafetensorsTensor& t = file.tensors.at(name);
    if (t.dtype == detail::TensorDtype::other)
      throw FileError(file.path + ": tensor " + name + " has dtype " + t.dtype_name +
                      "; lpurt imports F32, F16 or BF16 tensors");
    const chip::TensorShape s = chip::tensor_shape(cfg_, id);
    const std::vector<int64_t> expected =
        chip::is_quantized_matrix(id.kind) || id.kind == TensorKind::router ? std::vector<int64_t>{s.rows, s.cols}
                                                                            : std::vector<int64_t>{s.rows};
    if (t.shape != expected)
      throw FileError(file.path + ": tensor " + name + " has shape " + shape_text(t.shape) + ", expected " +
                      shape_text(expected) + " from config.json (" + shape_origin(cfg_, id.kind) + ")");
    sources_.emplace(chip::tensor_path(id), Source{name, found->second, t});
    tensor_bytes_ += t.data_bytes;
    largest_tensor_bytes_ = std::max(largest_tensor_bytes_, t.data_bytes);
    unclaimed.erase(found);
  }
  // Tied embeddings: Hugging Face writes no lm_head, or (some exporters) a copy of the embedding table.
  if (cfg_.tie_word_embeddings) {
    if (const auto head = unclaimed.find("lm_head.weight"); head != unclaimed.end()) {
      const detail::SafetensorsFile& file = files_[static_cast<std::size_t>(head->second)];
      const detail::SafetensorsTensor& t = file.tensors.at(head->first);
      const Source& embedding = sources_.at(chip::tensor_path({TensorKind::embedding}));
      bool same = t.dtype_name == embedding.tensor.dtype_name && t.shape == embedding.tensor.shape;
      std::vector<unsigned char> a, b;
      for (int64_t offset = 0; same && offset < t.data_bytes; offset += block_bytes) {
        const int64_t n = std::min(block_bytes, t.data_bytes - offset);
        a.resize(static_cast<std::size_t>(n)), b.resize(static_cast<std::size_t>(n));
        detail::read_exactly(file, t.data_begin + offset, n, a.data());
        detail::read_exactly(files_[static_cast<std::size_t>(embedding.file)], embedding.tensor.data_begin + offset, n,
                             b.data());
        same = a == b;
      }
      if (!same)
        throw FileError(file.path + ": has a tensor lm_head.weight that differs from model.embed_tokens.weight, but "
                        "config.json has tie_word_embeddings true (the logits would read the embedding table)");
      unclaimed.erase(head);
    }
  }
  if (!unclaimed.empty())
    throw FileError(files_[static_cast<std::size_t>(unclaimed.begin()->second)].path + ": holds tensor " +
                    unclaimed.begin()->first + ", which a " + chip::architecture_name(cfg_.architecture) +
                    " model of this config.json does not have (" + std::to_string(unclaimed.size()) +
                    " unexpected tensor(s))");
}

std::string HfCheckpoint::dtypes() const {
  std::set<std::string> names;
  for (const auto& entry : sources_) names.insert(detail::dtype_short_name(entry.second.tensor.dtype));
  std::string text;
  for (const auto& n : names) text += (text.empty() ? "" : ", ") + n;
  return text;
}

const HfCheckpoint::Source& HfCheckpoint::source_of(const TensorId& id) const {
  const auto it = sources_.find(chip::tensor_path(id));
  LPURT_ASSERT(it != sources_.end());
  return it->second;
}

void HfCheckpoint::for_each_row(const TensorId& id, int64_t row_begin, int64_t row_end,
                                const std::function<void(int64_t, const float*)>& row_done) {
  const Source& source = source_of(id);
  const detail::SafetensorsFile& file = files_[static_cast<std::size_t>(source.file)];
  const detail::SafetensorsTensor& t = source.tensor;
  const int64_t n_cols = chip::tensor_shape(cfg_, id).cols;
  const int64_t row_bytes = n_cols * t.element_bytes;
  const bool permuted = rotate_half_order(id.kind);
  const int64_t head_dim = cfg_.head_dim();
  // Whole heads when permuted (a SPEC row's HF row is in the same head), so a block is one read.
  const int64_t rows_per_block =
      permuted ? head_dim * std::max<int64_t>(1, block_bytes / (head_dim * row_bytes)) : std::max<int64_t>(1, block_bytes / row_bytes);
  for (int64_t first = row_begin; first < row_end;) {
    const int64_t last = std::min(row_end, permuted ? (first / head_dim * head_dim + rows_per_block) : first + rows_per_block);
    const int64_t hf_begin = permuted ? first / head_dim * head_dim : first;
    const int64_t hf_end = permuted ? chip::ceil_div(last, head_dim) * head_dim : last;
    raw_.resize(static_cast<std::size_t>((hf_end - hf_begin) * row_bytes));
    try {
      detail::read_exactly(file, t.data_begin + hf_begin * row_bytes, (hf_end - hf_begin) * row_bytes, raw_.data());
    } catch (const FileError& e) {
      throw CheckpointError(e.what());
    }
    std::atomic<int64_t> first_bad_row{std::numeric_limits<int64_t>::max()};
    tbb::parallel_for(tbb::blocked_range<int64_t>(first, last), [&](const tbb::blocked_range<int64_t>& rows) {
      std::vector<float> values(static_cast<std::size_t>(n_cols));  // [cols]
      for (int64_t row = rows.begin(); row < rows.end(); ++row) {
        const int64_t hf = permuted ? hf_row(row, head_dim) : row;
        if (detail::convert_to_float(t.dtype, raw_.data() + (hf - hf_begin) * row_bytes, n_cols, values.data()) >= 0) {
          int64_t seen = first_bad_row.load();
          while (row < seen && !first_bad_row.compare_exchange_weak(seen, row)) {
          }
          continue;
        }
        row_done(row, values.data());
      }
    });
    if (const int64_t row = first_bad_row.load(); row != std::numeric_limits<int64_t>::max()) {
      const int64_t hf = permuted ? hf_row(row, head_dim) : row;
      std::vector<float> values(static_cast<std::size_t>(n_cols));
      const int64_t col = detail::convert_to_float(t.dtype, raw_.data() + (hf - hf_begin) * row_bytes, n_cols, values.data());
      const std::string index = t.shape.size() == 2 ? std::to_string(hf) + ", " + std::to_string(col) : std::to_string(hf);
      throw CheckpointError(file.path + ": tensor " + source.name + "[" + index + "] is " +
                      format_number(static_cast<double>(values[static_cast<std::size_t>(col)])) +
                      "; lpurt imports finite weights only");
    }
    first = last;
  }
}

void HfCheckpoint::read_weight(const TensorId& requested, int64_t row_begin, int64_t row_end, int64_t col_begin,
                               int64_t col_end, int8_t* dst) {
  const TensorId id = chip::stored_tensor(cfg_, requested);
  const std::string key = chip::tensor_path(id);
  const int64_t n_rows = chip::tensor_shape(cfg_, id).rows;
  if (scales_tensor_ != key) {
    scales_tensor_ = key;
    scales_.assign(static_cast<std::size_t>(n_rows), 0.0f);
    known_.assign(static_cast<std::size_t>(n_rows), 0);
  }
  const int64_t width = col_end - col_begin;
  const int64_t n_cols = chip::tensor_shape(cfg_, id).cols;
  for_each_row(id, row_begin, row_end, [&](int64_t row, const float* values) {
    float amax = chip::max_abs(values, n_cols);
    // A row whose largest magnitude is below 127 x the smallest float (1.8e-43) would get a scale that
    // underflows to 0, which is no scale: it is stored as the zero row it is to float32 precision.
    if (chip::quantization_scale(amax) == 0.0f) amax = 0.0f;
    chip::quantize(values + col_begin, width, amax, dst + (row - row_begin) * width);
    scales_[static_cast<std::size_t>(row)] = chip::quantization_scale(amax);
    known_[static_cast<std::size_t>(row)] = 1;
  });
  bytes_read_ += (row_end - row_begin) * width;
}

void HfCheckpoint::read_scale(const TensorId& requested, int64_t row_begin, int64_t row_end, float* dst) {
  const TensorId id = chip::stored_tensor(cfg_, requested);
  const std::string key = chip::tensor_path(id);
  const chip::TensorShape s = chip::tensor_shape(cfg_, id);
  if (scales_tensor_ != key) {
    scales_tensor_ = key;
    scales_.assign(static_cast<std::size_t>(s.rows), 0.0f);
    known_.assign(static_cast<std::size_t>(s.rows), 0);
  }
  const auto begin = known_.begin() + row_begin, end = known_.begin() + row_end;
  if (!std::all_of(begin, end, [](unsigned char k) { return k != 0; })) {
    for_each_row(id, row_begin, row_end, [&](int64_t row, const float* values) {
      const float amax = chip::max_abs(values, s.cols);
      const float scale = chip::quantization_scale(amax);
      scales_[static_cast<std::size_t>(row)] = scale == 0.0f ? 1.0f : scale;  // as read_weight's underflow
      known_[static_cast<std::size_t>(row)] = 1;
    });
  }
  std::copy(scales_.begin() + row_begin, scales_.begin() + row_end, dst);
  bytes_read_ += 4 * (row_end - row_begin);
}

void HfCheckpoint::read_floats(const TensorId& id, int64_t row_begin, int64_t row_end, float* dst) {
  const int64_t n_cols = chip::tensor_shape(cfg_, id).cols;
  for_each_row(id, row_begin, row_end, [&](int64_t row, const float* values) {
    std::copy(values, values + n_cols, dst + (row - row_begin) * n_cols);
  });
  bytes_read_ += 4 * (row_end - row_begin) * n_cols;
}

void import_checkpoint(HfCheckpoint& checkpoint, const std::string& path, bool force,
                       const std::function<void(int64_t, int64_t)>& progress) {
  // A SentencePiece tokenizer next to the weights travels inside the model file, checked before a byte
  // is written: a tokenizer that is not one, or has more pieces than the model's vocabulary, is the
  // checkpoint's fault.
  const std::string tokenizer_path = checkpoint.name() + "/tokenizer.model";
  std::optional<Tokenizer> tokenizer;
  if (std::filesystem::exists(tokenizer_path)) {
    tokenizer = Tokenizer::from_file(tokenizer_path);
    tokenizer->check_fits(checkpoint.config().vocab_size, checkpoint.name());
  }
  AtomicFile file(path, force);
  try {
    ModelWriter writer(file.temporary_path(), checkpoint.config());
    writer.write_weights(checkpoint, int64_t{8} << 20, progress);
    writer.close();
    if (tokenizer) write_embedded_tokenizer(file.temporary_path(), *tokenizer, checkpoint.config().vocab_size);
  } catch (const CheckpointError&) {
    throw;  // the checkpoint's fault (an input error), not the write's; the temporary file goes with `file`
  } catch (const Error& e) {
    throw FileError(path + ": cannot write: " + e.what(), ExitCode::io);
  }
  file.commit();
}

}  // namespace lpurt::io
