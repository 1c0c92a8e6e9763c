// `lpurt import` (io/hf_checkpoint.hpp) on real safetensors checkpoints written here: every family, in
// float32, float16 and bfloat16, sharded and not, tied and not. The imported file's int8 weights, scales
// and float vectors are checked against an independent computation of SPEC's rules (the raw values
// decoded with ldexp from their fields, quantized with std::nearbyint, q and k rows moved by SPEC's
// formula), and every kind of bad checkpoint must fail with an error naming the file and the tensor,
// leaving no output.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <unistd.h>

#include "io/error.hpp"
#include "io/hf_checkpoint.hpp"
#include "io/model_file.hpp"

using namespace lpurt;
using chip::TensorId;
using chip::TensorKind;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("lpurt_hf_" + std::to_string(::getpid()) + "_" + std::to_string(count_++))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  static inline int count_ = 0;
  fs::path path_;
};

enum class Dtype { f32, f16, bf16 };

struct Tensor {
  std::string dtype;  // safetensors spelling
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;
  int64_t size() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};
using Tensors = std::map<std::string, Tensor>;

/// Element i's value, decoded from its sign, exponent and mantissa fields.
double decode(const Tensor& t, int64_t i) {
  if (t.dtype == "F32") {
    float v;
    std::memcpy(&v, &t.bytes[static_cast<std::size_t>(4 * i)], 4);
    return v;
  }
  const uint32_t bits = t.bytes[static_cast<std::size_t>(2 * i)] | (t.bytes[static_cast<std::size_t>(2 * i + 1)] << 8);
  const double sign = (bits & 0x8000u) ? -1.0 : 1.0;
  if (t.dtype == "F16") {
    const int e = static_cast<int>((bits >> 10) & 0x1f), m = static_cast<int>(bits & 0x3ff);
    return sign * (e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25));
  }
  const int e = static_cast<int>((bits >> 7) & 0xff), m = static_cast<int>(bits & 0x7f);  // BF16
  return sign * (e == 0 ? std::ldexp(m, -133) : std::ldexp(128 + m, e - 134));
}

/// A 16-bit pattern of a finite value: exponent field in [lo, hi], any mantissa, either sign.
uint16_t random_bits(std::mt19937_64& rng, int mantissa_bits, int lo, int hi) {
  const auto e = static_cast<uint32_t>(std::uniform_int_distribution<int>(lo, hi)(rng));
  const auto m = static_cast<uint32_t>(rng() & ((1u << mantissa_bits) - 1));
  const auto s = static_cast<uint32_t>(rng() & 1u);
  return static_cast<uint16_t>((s << 15) | (e << mantissa_bits) | m);
}

/// Values spread over several binades; float16 includes subnormals (exponent field 0).
Tensor random_tensor(Dtype dtype, std::vector<int64_t> shape, std::mt19937_64& rng) {
  Tensor t;
  t.shape = std::move(shape);
  const int64_t n = t.size();
  if (dtype == Dtype::f32) {
    t.dtype = "F32";
    std::normal_distribution<float> normal(0.0f, 0.5f);
    for (int64_t i = 0; i < n; ++i) {
      const float v = normal(rng);
      const auto* b = reinterpret_cast<const unsigned char*>(&v);
      t.bytes.insert(t.bytes.end(), b, b + 4);
    }
    return t;
  }
  t.dtype = dtype == Dtype::f16 ? "F16" : "BF16";
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = dtype == Dtype::f16 ? random_bits(rng, 10, 0, 17) : random_bits(rng, 7, 118, 128);
    t.bytes.push_back(static_cast<unsigned char>(h & 0xff));
    t.bytes.push_back(static_cast<unsigned char>(h >> 8));
  }
  return t;
}

/// Overwrites row `row` of a matrix with `values` (exactly representable in every dtype).
void set_row(Tensor& t, int64_t row, const std::vector<float>& values) {
  const int64_t cols = t.shape[1];
  for (int64_t c = 0; c < cols; ++c) {
    const float v = c < static_cast<int64_t>(values.size()) ? values[static_cast<std::size_t>(c)] : 0.0f;
    const auto i = static_cast<std::size_t>(row * cols + c);
    if (t.dtype == "F32") {
      std::memcpy(&t.bytes[4 * i], &v, 4);
    } else {
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      // Both 16-bit formats hold these small dyadic values exactly.
      uint16_t h;
      if (t.dtype == "BF16") {
        h = static_cast<uint16_t>(bits >> 16);
      } else if (v == 0.0f) {
        h = static_cast<uint16_t>((bits >> 16) & 0x8000u);
      } else {
        const int e = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
        h = static_cast<uint16_t>(((bits >> 16) & 0x8000u) | (static_cast<uint32_t>(e) << 10) | ((bits >> 13) & 0x3ffu));
      }
      t.bytes[2 * i] = static_cast<unsigned char>(h & 0xff);
      t.bytes[2 * i + 1] = static_cast<unsigned char>(h >> 8);
    }
  }
}

/// A tiny configuration of each model type, as its config.json would say it.
json config_for(const std::string& model_type, bool tied) {
  json c = {{"model_type", model_type},       {"vocab_size", 64},          {"hidden_size", 32},
            {"intermediate_size", 48},        {"num_hidden_layers", 2},    {"num_attention_heads", 4},
            {"num_key_value_heads", 2},       {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-5},
            {"rope_theta", 10000.0},          {"hidden_act", "silu"},      {"tie_word_embeddings", tied},
            {"torch_dtype", "bfloat16"}};
  if (model_type == "mistral") c["sliding_window"] = nullptr;
  if (model_type == "qwen3" || model_type == "qwen3_moe") c["head_dim"] = 16;  // != hidden_size / heads = 8
  if (model_type == "mixtral") c.update({{"num_local_experts", 4}, {"num_experts_per_tok", 2}});
  if (model_type == "qwen3_moe")
    c.update({{"num_experts", 4}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 24}, {"norm_topk_prob", true}});
  return c;
}

/// The checkpoint's tensors as transformers names and shapes them (LlamaForCausalLM, MixtralForCausalLM,
/// Qwen2/Qwen3/Qwen3MoeForCausalLM), matrices in `matrix_dtype` and vectors in `vector_dtype`.
Tensors make_tensors(const json& c, Dtype matrix_dtype, Dtype vector_dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::string type = c["model_type"];
  const int64_t V = c["vocab_size"], D = c["hidden_size"], F = c["intermediate_size"], L = c["num_hidden_layers"];
  const int64_t H = c["num_attention_heads"], KV = c["num_key_value_heads"];
  const int64_t hd = c.contains("head_dim") ? c["head_dim"].get<int64_t>() : D / H;
  Tensors t;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) { t[name] = random_tensor(matrix_dtype, {rows, cols}, rng); };
  auto vector = [&](const std::string& name, int64_t n) { t[name] = random_tensor(vector_dtype, {n}, rng); };
  matrix("model.embed_tokens.weight", V, D);
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    vector(p + "input_layernorm.weight", D);
    vector(p + "post_attention_layernorm.weight", D);
    matrix(p + "self_attn.q_proj.weight", H * hd, D);
    matrix(p + "self_attn.k_proj.weight", KV * hd, D);
    matrix(p + "self_attn.v_proj.weight", KV * hd, D);
    matrix(p + "self_attn.o_proj.weight", D, H * hd);
    if (type == "qwen2")
      for (const char* x : {"q", "k", "v"}) vector(p + "self_attn." + x + "_proj.bias", (x[0] == 'q' ? H : KV) * hd);
    if (type == "qwen3" || type == "qwen3_moe") {
      vector(p + "self_attn.q_norm.weight", hd);
      vector(p + "self_attn.k_norm.weight", hd);
    }
    if (type == "mixtral") {
      const int64_t E = c["num_local_experts"];
      matrix(p + "block_sparse_moe.gate.weight", E, D);
      for (int64_t e = 0; e < E; ++e) {
        const std::string x = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
        matrix(x + "w1.weight", F, D);
        matrix(x + "w2.weight", D, F);
        matrix(x + "w3.weight", F, D);
      }
    } else if (type == "qwen3_moe") {
      const int64_t E = c["num_experts"], Fe = c["moe_intermediate_size"];
      matrix(p + "mlp.gate.weight", E, D);
      for (int64_t e = 0; e < E; ++e) {
        const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
        matrix(x + "gate_proj.weight", Fe, D);
        matrix(x + "up_proj.weight", Fe, D);
        matrix(x + "down_proj.weight", D, Fe);
      }
    } else {
      matrix(p + "mlp.gate_proj.weight", F, D);
      matrix(p + "mlp.up_proj.weight", F, D);
      matrix(p + "mlp.down_proj.weight", D, F);
    }
  }
  vector("model.norm.weight", D);
  if (!c["tie_word_embeddings"].get<bool>()) matrix("lm_head.weight", V, D);
  // SPEC's special cases, in the first FFN matrix: an all-zero row (scale 1, zeros) and a row with
  // max 127 (scale 1) whose halves round to even.
  Tensor& ffn = t.at(type == "mixtral" ? "model.layers.0.block_sparse_moe.experts.0.w3.weight"
                                       : type == "qwen3_moe" ? "model.layers.0.mlp.experts.0.up_proj.weight"
                                                             : "model.layers.0.mlp.up_proj.weight");
  set_row(ffn, 0, {});
  set_row(ffn, 1, {127.0f, 2.5f, 3.5f, -2.5f, 0.5f, -0.5f, 1.5f, -126.5f});
  return t;
}

void write_raw(const std::string& path, const std::string& header, const std::vector<unsigned char>& data,
               uint64_t header_length) {
  std::ofstream out(path, std::ios::binary);
  for (int b = 0; b < 8; ++b) out.put(static_cast<char>((header_length >> (8 * b)) & 0xff));
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

/// The safetensors file of `tensors`, data in name order (as safetensors' Python writer sorts them).
void write_safetensors(const std::string& path, const Tensors& tensors) {
  json header = {{"__metadata__", {{"format", "pt"}}}};
  std::vector<unsigned char> data;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data.insert(data.end(), t.bytes.begin(), t.bytes.end());
  }
  const std::string text = header.dump();
  write_raw(path, text, data, text.size());
}

/// config.json and model.safetensors, or `n_shards` shards and their index.
void write_checkpoint(const std::string& dir, const json& config, const Tensors& tensors, int n_shards) {
  fs::create_directories(dir);
  std::ofstream(dir + "/config.json") << config.dump(2);
  if (n_shards == 0) {
    write_safetensors(dir + "/model.safetensors", tensors);
    return;
  }
  std::vector<Tensors> shards(static_cast<std::size_t>(n_shards));
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  int i = 0;
  for (const auto& [name, t] : tensors) {
    const int shard = i++ * n_shards / static_cast<int>(tensors.size());
    shards[static_cast<std::size_t>(shard)][name] = t;
    char file[64];
    std::snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", shard + 1, n_shards);
    index["weight_map"][name] = file;
  }
  for (int s = 0; s < n_shards; ++s) {
    char file[64];
    std::snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
    write_safetensors(dir + "/" + file, shards[static_cast<std::size_t>(s)]);
  }
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump(2);
}

/// Hugging Face's name of each tensor of the model file.
std::string hf_name(const std::string& type, const TensorId& id) {
  const std::string p = "model.layers." + std::to_string(id.layer) + ".";
  const std::string e = std::to_string(id.expert);
  auto ffn = [&](const char* dense, const char* mixtral) {
    if (id.expert < 0) return p + "mlp." + dense + ".weight";
    return type == "mixtral" ? p + "block_sparse_moe.experts." + e + "." + mixtral + ".weight"
                             : p + "mlp.experts." + e + "." + dense + ".weight";
  };
  switch (id.kind) {
    case TensorKind::embedding: return "model.embed_tokens.weight";
    case TensorKind::lm_head: return "lm_head.weight";
    case TensorKind::final_norm: return "model.norm.weight";
    case TensorKind::attn_norm: return p + "input_layernorm.weight";
    case TensorKind::ffn_norm: return p + "post_attention_layernorm.weight";
    case TensorKind::wq: return p + "self_attn.q_proj.weight";
    case TensorKind::wk: return p + "self_attn.k_proj.weight";
    case TensorKind::wv: return p + "self_attn.v_proj.weight";
    case TensorKind::wo: return p + "self_attn.o_proj.weight";
    case TensorKind::wq_bias: return p + "self_attn.q_proj.bias";
    case TensorKind::wk_bias: return p + "self_attn.k_proj.bias";
    case TensorKind::wv_bias: return p + "self_attn.v_proj.bias";
    case TensorKind::q_norm: return p + "self_attn.q_norm.weight";
    case TensorKind::k_norm: return p + "self_attn.k_norm.weight";
    case TensorKind::router: return p + (type == "mixtral" ? "block_sparse_moe.gate.weight" : "mlp.gate.weight");
    case TensorKind::w_gate: return ffn("gate_proj", "w1");
    case TensorKind::w_up: return ffn("up_proj", "w3");
    case TensorKind::w_down: return ffn("down_proj", "w2");
  }
  return "?";
}

/// SPEC: within each head, HF row r < hd/2 goes to 2r, r >= hd/2 to 2(r - hd/2) + 1.
int64_t spec_row(int64_t hf_row, int64_t hd) {
  const int64_t head = hf_row / hd, r = hf_row % hd;
  return head * hd + (r < hd / 2 ? 2 * r : 2 * (r - hd / 2) + 1);
}

bool permuted(TensorKind k) {
  return k == TensorKind::wq || k == TensorKind::wk || k == TensorKind::wq_bias || k == TensorKind::wk_bias ||
         k == TensorKind::q_norm || k == TensorKind::k_norm;
}

/// Checks every tensor of the model file at `path` against SPEC's conversion of `tensors`.
void expect_imported_exactly(const std::string& path, const json& config, const Tensors& tensors) {
  const std::string type = config["model_type"];
  auto file = io::ModelFile::open(path);
  const chip::ModelConfig& cfg = file->config();
  EXPECT_EQ(cfg.tie_word_embeddings, config["tie_word_embeddings"].get<bool>());
  const int64_t hd = cfg.head_dim();
  int64_t n_checked = 0;
  for (const TensorId& id : chip::model_tensors(cfg)) {
    const Tensor& t = tensors.at(hf_name(type, id));
    const int64_t rows = t.shape[0], cols = t.shape.size() == 2 ? t.shape[1] : 1;
    // [rows, cols] in SPEC's row order, as float32.
    std::vector<float> values(static_cast<std::size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        values[static_cast<std::size_t>((permuted(id.kind) ? spec_row(r, hd) : r) * cols + c)] =
            static_cast<float>(decode(t, r * cols + c));
    const std::string where = chip::tensor_path(id) + " from " + hf_name(type, id);
    if (!chip::is_quantized_matrix(id.kind)) {
      std::vector<float> got(values.size());
      file->read_floats(id, 0, rows, got.data());
      EXPECT_EQ(got, values) << where;
      ++n_checked;
      continue;
    }
    std::vector<int8_t> q(values.size()), got_q(values.size());
    std::vector<float> scale(static_cast<std::size_t>(rows)), got_scale(scale.size());
    for (int64_t r = 0; r < rows; ++r) {
      float amax = 0.0f;
      for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(values[static_cast<std::size_t>(r * cols + c)]));
      const float s = amax == 0.0f ? 1.0f : amax / 127.0f;
      scale[static_cast<std::size_t>(r)] = s;
      for (int64_t c = 0; c < cols; ++c) {
        const float x = std::nearbyint(values[static_cast<std::size_t>(r * cols + c)] / s);
        q[static_cast<std::size_t>(r * cols + c)] = static_cast<int8_t>(std::clamp(x, -127.0f, 127.0f));
      }
    }
    file->read_weight(id, 0, rows, 0, cols, got_q.data());
    file->read_scale(id, 0, rows, got_scale.data());
    EXPECT_EQ(got_q, q) << where;
    EXPECT_EQ(got_scale, scale) << where;
    ++n_checked;
    if (id.kind == TensorKind::w_up && id.layer == 0 && id.expert <= 0) {
      EXPECT_EQ(got_scale[0], 1.0f);
      EXPECT_TRUE(std::all_of(got_q.begin(), got_q.begin() + cols, [](int8_t v) { return v == 0; }));
      EXPECT_EQ(got_scale[1], 1.0f);
      const std::vector<int8_t> halves_to_even = {127, 2, 4, -2, 0, 0, 2, -126};
      EXPECT_EQ(std::vector<int8_t>(got_q.begin() + cols, got_q.begin() + cols + 8), halves_to_even);
    }
  }
  EXPECT_EQ(n_checked, static_cast<int64_t>(chip::model_tensors(cfg).size()));
}

/// Imports `dir` into `out` and returns the error message ("no error" if it imported).
std::string import_error(const std::string& dir, const std::string& out) {
  try {
    auto checkpoint = io::HfCheckpoint::open(dir);
    io::import_checkpoint(*checkpoint, out, false);
  } catch (const io::FileError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

struct Case {
  const char* model_type;
  Dtype matrices, vectors;
  int n_shards;  // 0: one model.safetensors
  bool tied;
};

TEST(HfImport, ConvertsEveryFamilyDtypeAndLayoutExactlyAsSpecSays) {
  const Case cases[] = {
      {"llama", Dtype::f32, Dtype::f32, 0, false},   {"llama", Dtype::bf16, Dtype::bf16, 3, true},
      {"mistral", Dtype::f16, Dtype::f16, 2, false}, {"qwen2", Dtype::bf16, Dtype::bf16, 2, true},
      {"qwen2", Dtype::f16, Dtype::f32, 0, false},   {"qwen3", Dtype::f16, Dtype::f16, 0, true},
      {"qwen3", Dtype::bf16, Dtype::f32, 4, false},  {"mixtral", Dtype::bf16, Dtype::bf16, 2, false},
      {"mixtral", Dtype::f32, Dtype::f16, 0, true},  {"qwen3_moe", Dtype::f32, Dtype::f32, 3, false},
      {"qwen3_moe", Dtype::bf16, Dtype::f32, 0, true},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.model_type) + " shards " + std::to_string(c.n_shards) + (c.tied ? " tied" : ""));
    TempDir dir;
    const json config = config_for(c.model_type, c.tied);
    const Tensors tensors = make_tensors(config, c.matrices, c.vectors, seed++);
    write_checkpoint(dir.file("ckpt"), config, tensors, c.n_shards);
    auto checkpoint = io::HfCheckpoint::open(dir.file("ckpt"));
    EXPECT_EQ(checkpoint->n_files(), std::max(1, c.n_shards));
    io::import_checkpoint(*checkpoint, dir.file("m.h5"), false);
    expect_imported_exactly(dir.file("m.h5"), config, tensors);
  }
}

TEST(HfImport, ReadsAnyBlockOfRowsAndColumnsOnItsOwn) {
  // A loader reads a chip's slices straight from the checkpoint: a block of q rows that starts and ends
  // inside a head, and a column range, must give the same values as the whole tensor's read.
  TempDir dir;
  const json config = config_for("qwen3", false);
  write_checkpoint(dir.file("ckpt"), config, make_tensors(config, Dtype::bf16, Dtype::bf16, 9), 0);
  auto checkpoint = io::HfCheckpoint::open(dir.file("ckpt"));
  const chip::ModelConfig& cfg = checkpoint->config();
  for (const TensorId id : {TensorId{TensorKind::wq, 1}, TensorId{TensorKind::wk, 0}, TensorId{TensorKind::w_down, 1}}) {
    const chip::TensorShape s = chip::tensor_shape(cfg, id);
    std::vector<int8_t> full(static_cast<std::size_t>(s.rows * s.cols)), block(static_cast<std::size_t>(9 * 11));
    std::vector<float> full_scale(static_cast<std::size_t>(s.rows)), block_scale(9);
    checkpoint->read_weight(id, 0, s.rows, 0, s.cols, full.data());
    checkpoint->read_scale(id, 0, s.rows, full_scale.data());
    auto fresh = io::HfCheckpoint::open(dir.file("ckpt"));  // no scales remembered from a whole read
    fresh->read_scale(id, 5, 14, block_scale.data());
    fresh->read_weight(id, 5, 14, 3, 14, block.data());
    for (int64_t r = 0; r < 9; ++r) {
      EXPECT_EQ(block_scale[static_cast<std::size_t>(r)], full_scale[static_cast<std::size_t>(5 + r)]);
      for (int64_t c = 0; c < 11; ++c)
        EXPECT_EQ(block[static_cast<std::size_t>(r * 11 + c)], full[static_cast<std::size_t>((5 + r) * s.cols + 3 + c)])
            << chip::tensor_path(id) << " row " << 5 + r << " col " << 3 + c;
    }
  }
  std::vector<float> gains(16);
  checkpoint->read_floats({TensorKind::q_norm, 0}, 0, 16, gains.data());
  std::vector<float> middle(6);
  checkpoint->read_floats({TensorKind::q_norm, 0}, 7, 13, middle.data());
  EXPECT_TRUE(std::equal(middle.begin(), middle.end(), gains.begin() + 7));
}

TEST(HfImport, TiedEmbeddingsAcceptAnIdenticalLmHeadCopy) {
  TempDir dir;
  const json config = config_for("qwen2", true);
  Tensors tensors = make_tensors(config, Dtype::bf16, Dtype::bf16, 3);
  tensors["lm_head.weight"] = tensors.at("model.embed_tokens.weight");
  write_checkpoint(dir.file("ckpt"), config, tensors, 2);
  EXPECT_EQ(import_error(dir.file("ckpt"), dir.file("m.h5")), "no error");
  auto file = io::ModelFile::open(dir.file("m.h5"));
  EXPECT_TRUE(file->config().tie_word_embeddings);
}

namespace {

/// The base of every bad case: a valid llama checkpoint in one file.
struct BadCase {
  TempDir dir;
  json config = config_for("llama", false);
  Tensors tensors = make_tensors(config, Dtype::f32, Dtype::f32, 5);
  std::string ckpt() const { return dir.file("ckpt"); }
  std::string out() const { return dir.file("out/m.h5"); }

  BadCase() { fs::create_directories(dir.file("out")); }
  /// The import fails with `text` in its message and leaves nothing in the output folder.
  void expect_refused(const std::string& text) const {
    const std::string message = import_error(ckpt(), out());
    EXPECT_NE(message.find(text), std::string::npos) << message;
    EXPECT_TRUE(fs::is_empty(dir.file("out"))) << "the failed import left a file";
  }
  /// A single-file checkpoint whose header is `header` and data `data`.
  void write_with_header(const json& header, const std::vector<unsigned char>& data) const {
    fs::create_directories(ckpt());
    std::ofstream(ckpt() + "/config.json") << config.dump();
    const std::string text = header.dump();
    write_raw(ckpt() + "/model.safetensors", text, data, text.size());
  }
  /// The header and data write_safetensors would write.
  std::pair<json, std::vector<unsigned char>> layout() const {
    json header = json::object();
    std::vector<unsigned char> data;
    for (const auto& [name, t] : tensors) {
      header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
      data.insert(data.end(), t.bytes.begin(), t.bytes.end());
    }
    return {header, data};
  }
};

void set_f32(Tensor& t, int64_t i, float v) { std::memcpy(&t.bytes[static_cast<std::size_t>(4 * i)], &v, 4); }

}  // namespace

TEST(HfImport, RefusesMissingExtraAndMisshapenTensors) {
  {
    BadCase b;
    b.tensors.erase("model.layers.1.mlp.up_proj.weight");
    write_checkpoint(b.ckpt(), b.config, b.tensors, 0);
    b.expect_refused("ckpt/model.safetensors: has no tensor model.layers.1.mlp.up_proj.weight, which a llama model");
  }
  {
    BadCase b;
    b.tensors.erase("lm_head.weight");
    write_checkpoint(b.ckpt(), b.config, b.tensors, 2);
    b.expect_refused("model.safetensors.index.json: has no tensor lm_head.weight, which a llama model of this "
                     "config.json has (tie_word_embeddings is false)");
  }
  {
    BadCase b;
    std::mt19937_64 rng(1);
    b.tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = random_tensor(Dtype::f32, {4}, rng);
    write_checkpoint(b.ckpt(), b.config, b.tensors, 0);
    b.expect_refused("model.safetensors: holds tensor model.layers.0.self_attn.rotary_emb.inv_freq, which a llama "
                     "model of this config.json does not have (1 unexpected tensor(s))");
  }
  {
    BadCase b;
    std::mt19937_64 rng(1);
    b.tensors["model.layers.0.self_attn.q_proj.weight"] = random_tensor(Dtype::f32, {28, 32}, rng);
    write_checkpoint(b.ckpt(), b.config, b.tensors, 0);
    b.expect_refused("tensor model.layers.0.self_attn.q_proj.weight has shape [28, 32], expected [32, 32] from "
                     "config.json (num_attention_heads x head_dim, hidden_size)");
  }
  {  // a config that disagrees with the tensors
    BadCase b;
    b.config["vocab_size"] = 100;
    write_checkpoint(b.ckpt(), b.config, b.tensors, 0);
    b.expect_refused("tensor model.embed_tokens.weight has shape [64, 32], expected [100, 32] from config.json "
                     "(vocab_size, hidden_size)");
  }
  {
    BadCase b;
    b.config["tie_word_embeddings"] = true;
    write_checkpoint(b.ckpt(), b.config, b.tensors, 0);  // its lm_head is not the embedding table
    b.expect_refused("has a tensor lm_head.weight that differs from model.embed_tokens.weight, but config.json has "
                     "tie_word_embeddings true");
  }
  {
    BadCase b;
    Tensor& t = b.tensors.at("model.layers.0.self_attn.v_proj.weight");
    t.dtype = "F64";  // 8 bytes per element: the data is the right size for a [16, 16] F64 tensor
    t.shape = {16, 16};
    write_checkpoint(b.ckpt(), b.config, b.tensors, 0);
    b.expect_refused("tensor model.layers.0.self_attn.v_proj.weight has dtype F64; lpurt imports F32, F16 or BF16");
  }
  {
    BadCase b;
    auto [header, data] = b.layout();
    header["model.norm.weight"]["dtype"] = "F4";
    b.write_with_header(header, data);
    b.expect_refused("tensor model.norm.weight has dtype \"F4\", which lpurt cannot read");
  }
}

TEST(HfImport, RefusesBrokenSafetensorsFiles) {
  {
    BadCase b;
    write_checkpoint(b.ckpt(), b.config, b.tensors, 0);
    fs::resize_file(b.ckpt() + "/model.safetensors", fs::file_size(b.ckpt() + "/model.safetensors") - 10);
    b.expect_refused("model.safetensors: truncated: tensor model.norm.weight ends at byte");
  }
  {  // offsets that overlap (the data keeps its size: another tensor's range is used twice)
    BadCase b;
    auto [header, data] = b.layout();
    header["model.layers.0.post_attention_layernorm.weight"]["data_offsets"] =
        header["model.layers.0.input_layernorm.weight"]["data_offsets"];
    b.write_with_header(header, data);
    b.expect_refused("overlaps tensor model.layers.0.input_layernorm.weight");
  }
  {  // offsets past the end: the last tensor claims 4 bytes more than the file has
    BadCase b;
    auto [header, data] = b.layout();
    header["model.norm.weight"]["shape"] = {33};
    header["model.norm.weight"]["data_offsets"][1] = header["model.norm.weight"]["data_offsets"][1].get<int64_t>() + 4;
    b.write_with_header(header, data);
    b.expect_refused("truncated: tensor model.norm.weight ends at byte");
  }
  {  // bytes that belong to no tensor
    BadCase b;
    auto [header, data] = b.layout();
    data.insert(data.end(), 16, 0);
    b.write_with_header(header, data);
    b.expect_refused("16 bytes after the last tensor's data belong to no tensor");
  }
  {  // data_offsets that disagree with shape and dtype
    BadCase b;
    auto [header, data] = b.layout();
    header["model.norm.weight"]["shape"] = {31};
    b.write_with_header(header, data);
    b.expect_refused("tensor model.norm.weight has data_offsets");
  }
  {  // a header length larger than the file
    BadCase b;
    auto [header, data] = b.layout();
    b.write_with_header(header, data);
    const std::string text = header.dump();
    write_raw(b.ckpt() + "/model.safetensors", text, data, text.size() + data.size() + 1);
    b.expect_refused("header length " + std::to_string(text.size() + data.size() + 1) + " runs past the end of the file");
  }
  {
    BadCase b;
    auto [header, data] = b.layout();
    b.write_with_header(header, data);
    write_raw(b.ckpt() + "/model.safetensors", "{\"a\": [1, 2", {}, 11);
    b.expect_refused("model.safetensors: header is not valid JSON");
  }
  {
    BadCase b;
    fs::create_directories(b.ckpt());
    std::ofstream(b.ckpt() + "/config.json") << b.config.dump();
    std::ofstream(b.ckpt() + "/model.safetensors") << "abc";
    b.expect_refused("model.safetensors: truncated: 3 bytes, less than the 8-byte header length");
  }
}

TEST(HfImport, RefusesIndexesThatDisagreeWithTheirShards) {
  {
    BadCase b;
    write_checkpoint(b.ckpt(), b.config, b.tensors, 2);
    json index = json::parse(std::ifstream(b.ckpt() + "/model.safetensors.index.json"));
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";  // it is in shard 2
    std::ofstream(b.ckpt() + "/model.safetensors.index.json") << index.dump();
    b.expect_refused("model-00002-of-00002.safetensors: holds tensor model.norm.weight, which "
                     "model.safetensors.index.json puts in model-00001-of-00002.safetensors");
  }
  {
    BadCase b;
    write_checkpoint(b.ckpt(), b.config, b.tensors, 2);
    json index = json::parse(std::ifstream(b.ckpt() + "/model.safetensors.index.json"));
    index["weight_map"].erase("model.norm.weight");
    std::ofstream(b.ckpt() + "/model.safetensors.index.json") << index.dump();
    b.expect_refused("holds tensor model.norm.weight, which model.safetensors.index.json does not list");
  }
  {
    BadCase b;
    write_checkpoint(b.ckpt(), b.config, b.tensors, 2);
    json index = json::parse(std::ifstream(b.ckpt() + "/model.safetensors.index.json"));
    index["weight_map"]["model.extra.weight"] = "model-00001-of-00002.safetensors";
    std::ofstream(b.ckpt() + "/model.safetensors.index.json") << index.dump();
    b.expect_refused("model.safetensors.index.json: puts tensor model.extra.weight in model-00001-of-00002.safetensors, "
                     "which does not hold it");
  }
  {
    BadCase b;
    write_checkpoint(b.ckpt(), b.config, b.tensors, 2);
    json index = json::parse(std::ifstream(b.ckpt() + "/model.safetensors.index.json"));
    index["weight_map"]["model.norm.weight"] = "../model-00002-of-00002.safetensors";
    std::ofstream(b.ckpt() + "/model.safetensors.index.json") << index.dump();
    b.expect_refused("is \"../model-00002-of-00002.safetensors\", expected the name of a file in");
  }
  {
    BadCase b;
    write_checkpoint(b.ckpt(), b.config, b.tensors, 2);
    fs::remove(b.ckpt() + "/model-00002-of-00002.safetensors");
    b.expect_refused("model-00002-of-00002.safetensors: cannot open");
  }
  {
    BadCase b;
    write_checkpoint(b.ckpt(), b.config, b.tensors, 2);
    write_safetensors(b.ckpt() + "/model.safetensors", b.tensors);
    b.expect_refused("has both model.safetensors and model.safetensors.index.json");
  }
  {
    BadCase b;
    fs::create_directories(b.ckpt());
    std::ofstream(b.ckpt() + "/config.json") << b.config.dump();
    b.expect_refused("has neither model.safetensors nor model.safetensors.index.json");
  }
  {
    BadCase b;
    write_checkpoint(b.ckpt(), b.config, b.tensors, 0);
    fs::remove(b.ckpt() + "/config.json");
    b.expect_refused("config.json: no such file");
  }
}

TEST(HfImport, RefusesWeightsThatAreNotFiniteAndLeavesNoOutput) {
  {
    BadCase b;
    set_f32(b.tensors.at("model.layers.1.mlp.down_proj.weight"), 3 * 48 + 5, std::nanf(""));
    write_checkpoint(b.ckpt(), b.config, b.tensors, 0);
    b.expect_refused("model.safetensors: tensor model.layers.1.mlp.down_proj.weight[3, 5] is nan");
    // An input error, not a failed write.
    auto checkpoint = io::HfCheckpoint::open(b.ckpt());
    EXPECT_THROW(io::import_checkpoint(*checkpoint, b.out(), false), io::CheckpointError);
  }
  {
    BadCase b;
    set_f32(b.tensors.at("model.norm.weight"), 7, -INFINITY);
    write_checkpoint(b.ckpt(), b.config, b.tensors, 2);
    b.expect_refused("model-00002-of-00002.safetensors: tensor model.norm.weight[7] is -inf");
  }
  {  // in a permuted tensor, the index named is the checkpoint's (Hugging Face's) row
    BadCase b;
    set_f32(b.tensors.at("model.layers.0.self_attn.k_proj.weight"), 5 * 32 + 2, INFINITY);
    write_checkpoint(b.ckpt(), b.config, b.tensors, 0);
    b.expect_refused("tensor model.layers.0.self_attn.k_proj.weight[5, 2] is inf");
  }
}

TEST(HfImport, ReplacesAnExistingFileOnlyWithForce) {
  TempDir dir;
  const json config = config_for("llama", false);
  write_checkpoint(dir.file("ckpt"), config, make_tensors(config, Dtype::bf16, Dtype::bf16, 2), 0);
  std::ofstream(dir.file("m.h5")) << "keep me";
  auto checkpoint = io::HfCheckpoint::open(dir.file("ckpt"));
  EXPECT_THROW(io::import_checkpoint(*checkpoint, dir.file("m.h5"), false), io::FileError);
  EXPECT_EQ(fs::file_size(dir.file("m.h5")), 7u);
  io::import_checkpoint(*checkpoint, dir.file("m.h5"), true);
  EXPECT_TRUE(io::ModelFile::open(dir.file("m.h5"))->has_weights());
}
