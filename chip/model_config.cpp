#include "chip/model_config.hpp"

#include <algorithm>
#include <map>

#include "chip/error.hpp"

namespace lpurt::chip {

const char* architecture_name(Architecture a) {
  switch (a) {
    case Architecture::llama: return "llama";
    case Architecture::mixtral: return "mixtral";
    case Architecture::qwen2: return "qwen2";
    case Architecture::qwen3: return "qwen3";
    case Architecture::qwen3_moe: return "qwen3_moe";
  }
  LPURT_ASSERT(false);
}

Architecture parse_architecture(const std::string& name) {
  if (name == "llama" || name == "mistral") return Architecture::llama;
  if (name == "mixtral") return Architecture::mixtral;
  if (name == "qwen2") return Architecture::qwen2;
  if (name == "qwen3") return Architecture::qwen3;
  if (name == "qwen3_moe") return Architecture::qwen3_moe;
  throw ConfigError("architecture: got \"" + name +
                    "\", expected \"llama\", \"mistral\", \"mixtral\", \"qwen2\", \"qwen3\" or \"qwen3_moe\"");
}

const char* rope_scaling_name(RopeScalingType t) { return t == RopeScalingType::llama3 ? "llama3" : "none"; }

RopeScalingType parse_rope_scaling(const std::string& name) {
  if (name == "none") return RopeScalingType::none;
  if (name == "llama3") return RopeScalingType::llama3;
  throw ConfigError("rope_scaling_type: got \"" + name + "\", expected \"none\" or \"llama3\"");
}

namespace {

// Sanity bounds: larger than any public model by a wide margin, small enough that sizes computed from
// them cannot overflow int64 and that an absurd file fails here rather than in an allocation.
constexpr int64_t max_vocab_size = int64_t{1} << 24;
// A matmul's inner dimension (hidden_size or intermediate_size) bounds its int32 accumulator:
// n * 127 * 127 must stay below 2^31, so n <= 133,143. 2^17 = 131,072 keeps every sum exact.
constexpr int64_t max_hidden_size = int64_t{1} << 17;
constexpr int64_t max_intermediate_size = int64_t{1} << 17;
constexpr int64_t max_n_layers = int64_t{1} << 16;
constexpr int64_t max_seq_len_bound = int64_t{1} << 24;
constexpr int64_t max_n_experts = 1024;
constexpr int64_t max_head_dim = 1024;

void check_range(const char* field, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi)
    throw ConfigError(std::string(field) + ": got " + std::to_string(value) + ", expected " +
                      std::to_string(lo) + " .. " + std::to_string(hi));
}

}  // namespace

void ModelConfig::validate() const {
  check_range("vocab_size", vocab_size, 2, max_vocab_size);
  check_range("hidden_size", hidden_size, 2, max_hidden_size);
  check_range("intermediate_size", intermediate_size, 1, max_intermediate_size);
  check_range("n_layers", n_layers, 1, max_n_layers);
  check_range("n_heads", n_heads, 1, hidden_size);
  check_range("n_kv_heads", n_kv_heads, 1, n_heads);
  check_range("max_seq_len", max_seq_len, 1, max_seq_len_bound);
  if (explicit_head_dim != 0) {
    check_range("head_dim", explicit_head_dim, 2, max_head_dim);
    // wo's inner dimension is H * hd: the same int32 bound as any other matmul's.
    check_range("n_heads * head_dim", q_size(), 2, max_hidden_size);
    if (explicit_head_dim % 2 != 0)
      throw ConfigError("head_dim: got " + std::to_string(explicit_head_dim) + ", expected an even value (RoPE rotates pairs)");
  } else {
    if (hidden_size % n_heads != 0)
      throw ConfigError("hidden_size (" + std::to_string(hidden_size) + ") must be a multiple of n_heads (" +
                        std::to_string(n_heads) + "), or head_dim must be given");
    if (head_dim() % 2 != 0)
      throw ConfigError("head_dim = hidden_size / n_heads = " + std::to_string(head_dim()) +
                        " must be even (RoPE rotates pairs)");
  }
  if (n_heads % n_kv_heads != 0)
    throw ConfigError("n_heads (" + std::to_string(n_heads) + ") must be a multiple of n_kv_heads (" +
                      std::to_string(n_kv_heads) + ")");
  if (!(rope_theta > 1.0f) || !(rope_theta < 1e12f))
    throw ConfigError("rope_theta: got " + format_number(rope_theta) + ", expected a finite value > 1");
  if (!(norm_eps > 0.0f) || !(norm_eps < 1.0f))
    throw ConfigError("norm_eps: got " + format_number(norm_eps) + ", expected 0 < norm_eps < 1");
  if (is_moe()) {
    check_range("n_experts", n_experts, 1, max_n_experts);
    check_range("n_experts_per_token", n_experts_per_token, 1, n_experts);
    if (moe_intermediate_size != 0) check_range("moe_intermediate_size", moe_intermediate_size, 1, max_intermediate_size);
  } else if (moe_intermediate_size != 0) {
    throw ConfigError("moe_intermediate_size: given for architecture " + std::string(architecture_name(architecture)) +
                      ", which has no experts");
  }
  if (rope_scaling.type == RopeScalingType::llama3) {
    const RopeScaling& r = rope_scaling;
    if (!(r.factor >= 1.0) || !(r.factor < 1e6))
      throw ConfigError("rope_scaling_factor: got " + format_number(r.factor) + ", expected a finite value >= 1");
    if (!(r.low_freq_factor > 0.0) || !(r.high_freq_factor > r.low_freq_factor) || !(r.high_freq_factor < 1e6))
      throw ConfigError("rope_low_freq_factor, rope_high_freq_factor: got " + format_number(r.low_freq_factor) + ", " +
                        format_number(r.high_freq_factor) + ", expected 0 < low < high (finite)");
    check_range("rope_original_max_position", r.original_max_position, 1, max_seq_len_bound);
  }
}

int64_t ModelConfig::layer_weight_bytes() const {
  int64_t bytes = 0;
  for (const auto& t : layer_tensors(*this, 0)) bytes += tensor_bytes(*this, t);
  return bytes;
}

int64_t ModelConfig::weight_bytes() const {
  const int64_t model_level = tensor_bytes(*this, {TensorKind::embedding}) +
                              tensor_bytes(*this, {TensorKind::final_norm}) +
                              (tie_word_embeddings ? 0 : tensor_bytes(*this, {TensorKind::lm_head}));
  return model_level + n_layers * layer_weight_bytes();
}

int64_t ModelConfig::n_parameters() const {
  auto params = [&](const TensorId& id) {
    const TensorShape s = tensor_shape(*this, id);
    return s.rows * s.cols;
  };
  int64_t per_layer = 0;
  for (const auto& t : layer_tensors(*this, 0)) per_layer += params(t);
  return params({TensorKind::embedding}) + params({TensorKind::final_norm}) +
         (tie_word_embeddings ? 0 : params({TensorKind::lm_head})) + n_layers * per_layer;
}

ModelConfig model_preset(const std::string& name) {
  ModelConfig c;
  // {V, D, F, L, H, Hkv, S}
  auto dense = [&](int64_t v, int64_t d, int64_t f, int64_t l, int64_t h, int64_t hkv, int64_t s) {
    c.architecture = Architecture::llama;
    c.vocab_size = v, c.hidden_size = d, c.intermediate_size = f, c.n_layers = l;
    c.n_heads = h, c.n_kv_heads = hkv, c.max_seq_len = s;
  };
  auto qwen3 = [&](Architecture a, int64_t head_dim) {
    c.architecture = a, c.explicit_head_dim = head_dim, c.qk_norm = true;
    c.rope_theta = 1e6f, c.norm_eps = 1e-6f;
  };
  auto experts = [&](int64_t n, int64_t per_token, int64_t width) {
    c.n_experts = n, c.n_experts_per_token = per_token, c.moe_intermediate_size = width;
  };
  auto llama3_scaling = [&](double factor, double low, double high, int64_t original) {
    c.rope_scaling = {RopeScalingType::llama3, factor, low, high, original};
  };
  if (name == "tiny") {
    dense(1024, 128, 384, 4, 8, 2, 256);  // ~1 MB; 8 heads so that tensor parallelism up to 8 splits heads
  } else if (name == "tiny-mixtral") {
    dense(512, 64, 128, 2, 4, 2, 128);
    c.architecture = Architecture::mixtral, c.n_experts = 4, c.n_experts_per_token = 2;
  } else if (name == "tiny-llama3") {
    // theta and a short original context chosen so that hd = 16's eight frequencies fall in all three
    // branches of the llama3 scaling (kept, interpolated, divided by the factor).
    dense(1024, 128, 384, 3, 8, 2, 256);
    c.rope_theta = 500000.0f;
    llama3_scaling(8.0, 1.0, 4.0, 64);
  } else if (name == "tiny-qwen2") {
    dense(1024, 128, 384, 3, 8, 2, 256);
    c.architecture = Architecture::qwen2, c.attention_bias = true, c.rope_theta = 1e6f, c.norm_eps = 1e-6f;
  } else if (name == "tiny-qwen3") {
    dense(1024, 128, 384, 3, 8, 2, 256);  // head_dim 32 != D / H = 16, as in Qwen3-235B (128 vs 64)
    qwen3(Architecture::qwen3, 32);
    c.tie_word_embeddings = true;
  } else if (name == "tiny-qwen3-moe") {
    dense(512, 64, 256, 2, 4, 2, 128);  // Qwen3-MoE's routing: 128 experts, 8 per token, narrow experts
    qwen3(Architecture::qwen3_moe, 32);
    experts(128, 8, 32);
  } else if (name == "small") {
    dense(32000, 768, 2048, 8, 12, 4, 1024);  // 99.5M parameters
  } else if (name == "tinyllama-1.1b") {
    dense(32000, 2048, 5632, 22, 32, 4, 2048);  // TinyLlama-1.1B model card
  } else if (name == "llama2-7b") {
    dense(32000, 4096, 11008, 32, 32, 32, 4096);  // Llama-2-7b model card
  } else if (name == "llama2-70b") {
    dense(32000, 8192, 28672, 80, 64, 8, 4096);  // Llama-2-70b model card (GQA, 8 KV heads)
  } else if (name == "mixtral-8x7b") {
    dense(32000, 4096, 14336, 32, 32, 8, 32768);  // Mixtral-8x7B-v0.1 model card
    c.architecture = Architecture::mixtral, c.n_experts = 8, c.n_experts_per_token = 2;
    c.rope_theta = 1e6f;
  } else if (name == "llama3-8b") {
    dense(128256, 4096, 14336, 32, 32, 8, 8192);  // Meta-Llama-3-8B config.json
    c.rope_theta = 500000.0f;
  } else if (name == "llama3.1-8b") {
    dense(128256, 4096, 14336, 32, 32, 8, 131072);  // Llama-3.1-8B config.json
    c.rope_theta = 500000.0f;
    llama3_scaling(8.0, 1.0, 4.0, 8192);
  } else if (name == "llama3-70b") {
    dense(128256, 8192, 28672, 80, 64, 8, 8192);  // Meta-Llama-3-70B config.json
    c.rope_theta = 500000.0f;
  } else if (name == "qwen3-32b") {
    dense(151936, 5120, 25600, 64, 64, 8, 40960);  // Qwen3-32B config.json
    qwen3(Architecture::qwen3, 128);
  } else if (name == "qwen3-30b-a3b") {
    dense(151936, 2048, 6144, 48, 32, 4, 40960);  // Qwen3-30B-A3B config.json
    qwen3(Architecture::qwen3_moe, 128);
    experts(128, 8, 768);
  } else if (name == "qwen3-235b-a22b") {
    dense(151936, 4096, 12288, 94, 64, 4, 40960);  // Qwen3-235B-A22B config.json
    qwen3(Architecture::qwen3_moe, 128);
    experts(128, 8, 1536);
  } else {
    std::string names;
    for (const auto& n : model_preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw ConfigError("unknown model preset \"" + name + "\" (known: " + names + ")");
  }
  c.validate();
  return c;
}

std::vector<std::string> model_preset_names() {
  return {"tiny",         "tiny-mixtral",  "tiny-llama3", "tiny-qwen2",    "tiny-qwen3",   "tiny-qwen3-moe",
          "small",        "tinyllama-1.1b", "llama2-7b",  "llama2-70b",    "mixtral-8x7b", "llama3-8b",
          "llama3.1-8b",  "llama3-70b",    "qwen3-32b",   "qwen3-30b-a3b", "qwen3-235b-a22b"};
}

bool is_quantized_matrix(TensorKind kind) {
  switch (kind) {
    case TensorKind::attn_norm:
    case TensorKind::ffn_norm:
    case TensorKind::final_norm:
    case TensorKind::router:
    case TensorKind::wq_bias:
    case TensorKind::wk_bias:
    case TensorKind::wv_bias:
    case TensorKind::q_norm:
    case TensorKind::k_norm:
      return false;
    default:
      return true;
  }
}

TensorShape tensor_shape(const ModelConfig& c, const TensorId& id) {
  switch (id.kind) {
    case TensorKind::embedding:
    case TensorKind::lm_head: return {c.vocab_size, c.hidden_size};
    case TensorKind::attn_norm:
    case TensorKind::ffn_norm:
    case TensorKind::final_norm: return {c.hidden_size, 1};
    case TensorKind::wq: return {c.q_size(), c.hidden_size};
    case TensorKind::wk:
    case TensorKind::wv: return {c.kv_size(), c.hidden_size};
    case TensorKind::wo: return {c.hidden_size, c.q_size()};
    case TensorKind::w_gate:
    case TensorKind::w_up: return {c.ffn_size(), c.hidden_size};
    case TensorKind::w_down: return {c.hidden_size, c.ffn_size()};
    case TensorKind::router: return {c.n_experts, c.hidden_size};
    case TensorKind::wq_bias: return {c.q_size(), 1};
    case TensorKind::wk_bias:
    case TensorKind::wv_bias: return {c.kv_size(), 1};
    case TensorKind::q_norm:
    case TensorKind::k_norm: return {c.head_dim(), 1};
  }
  LPURT_ASSERT(false);
}

std::string tensor_path(const TensorId& id) {
  static const std::map<TensorKind, const char*> names = {
      {TensorKind::embedding, "embedding"}, {TensorKind::attn_norm, "attn_norm"}, {TensorKind::wq, "wq"},
      {TensorKind::wk, "wk"},   {TensorKind::wv, "wv"},   {TensorKind::wo, "wo"},
      {TensorKind::ffn_norm, "ffn_norm"},   {TensorKind::w_gate, "w_gate"},     {TensorKind::w_up, "w_up"},
      {TensorKind::w_down, "w_down"},       {TensorKind::router, "router"},     {TensorKind::final_norm, "final_norm"},
      {TensorKind::lm_head, "lm_head"},     {TensorKind::wq_bias, "wq/bias"},   {TensorKind::wk_bias, "wk/bias"},
      {TensorKind::wv_bias, "wv/bias"},     {TensorKind::q_norm, "q_norm"},     {TensorKind::k_norm, "k_norm"}};
  std::string path = "/";
  if (id.layer >= 0) path += "layers/" + std::to_string(id.layer) + "/";
  if (id.expert >= 0) path += "experts/" + std::to_string(id.expert) + "/";
  return path + names.at(id.kind);
}

TensorId stored_tensor(const ModelConfig& c, const TensorId& id) {
  if (id.kind == TensorKind::lm_head && c.tie_word_embeddings) return {TensorKind::embedding};
  return id;
}

std::vector<TensorId> layer_tensors(const ModelConfig& c, int64_t layer) {
  std::vector<TensorId> t = {{TensorKind::attn_norm, layer}, {TensorKind::wq, layer}};
  if (c.attention_bias) t.push_back({TensorKind::wq_bias, layer});
  t.push_back({TensorKind::wk, layer});
  if (c.attention_bias) t.push_back({TensorKind::wk_bias, layer});
  t.push_back({TensorKind::wv, layer});
  if (c.attention_bias) t.push_back({TensorKind::wv_bias, layer});
  if (c.qk_norm) {
    t.push_back({TensorKind::q_norm, layer});
    t.push_back({TensorKind::k_norm, layer});
  }
  t.push_back({TensorKind::wo, layer});
  t.push_back({TensorKind::ffn_norm, layer});
  if (c.is_moe()) {
    t.push_back({TensorKind::router, layer});
    for (int64_t e = 0; e < c.n_experts; ++e)
      for (auto k : {TensorKind::w_gate, TensorKind::w_up, TensorKind::w_down}) t.push_back({k, layer, e});
  } else {
    for (auto k : {TensorKind::w_gate, TensorKind::w_up, TensorKind::w_down}) t.push_back({k, layer});
  }
  return t;
}

std::vector<TensorId> model_tensors(const ModelConfig& c) {
  std::vector<TensorId> t = {{TensorKind::embedding}};
  for (int64_t l = 0; l < c.n_layers; ++l) {
    auto lt = layer_tensors(c, l);
    t.insert(t.end(), lt.begin(), lt.end());
  }
  t.push_back({TensorKind::final_norm});
  if (!c.tie_word_embeddings) t.push_back({TensorKind::lm_head});
  return t;
}

int64_t tensor_bytes(const ModelConfig& c, const TensorId& id) {
  const TensorShape s = tensor_shape(c, id);
  if (is_quantized_matrix(id.kind)) return s.rows * s.cols + s.rows * int64_t{4};
  return s.rows * s.cols * int64_t{4};
}

}  // namespace lpurt::chip
