#include "io/hf_config.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "chip/error.hpp"
#include "io/error.hpp"
#include "io/text_file.hpp"

namespace lpurt::io {

namespace {

using nlohmann::json;

enum class Family { llama, mistral, mixtral, qwen2, qwen3, qwen3_moe };

/// Defaults of Hugging Face's configuration class of each model type (transformers' configuration_*.py),
/// for the fields that may be left out.
struct FamilyDefaults {
  const char* model_type;
  Family family;
  double rope_theta;
  double rms_norm_eps;
  int64_t max_position_embeddings;
  int64_t num_key_value_heads;  ///< 0: num_attention_heads
  int64_t head_dim;             ///< 0: hidden_size / num_attention_heads
  std::optional<int64_t> sliding_window;  ///< the class's default window; nullopt: none (or no such field)
};

constexpr int64_t mistral_max_positions = 4096 * 32;
const FamilyDefaults families[] = {
    {"llama", Family::llama, 10000.0, 1e-6, 2048, 0, 0, std::nullopt},
    {"mistral", Family::mistral, 10000.0, 1e-6, mistral_max_positions, 8, 0, 4096},
    {"mixtral", Family::mixtral, 1e6, 1e-5, mistral_max_positions, 8, 0, std::nullopt},
    {"qwen2", Family::qwen2, 10000.0, 1e-6, 32768, 32, 0, 4096},
    {"qwen3", Family::qwen3, 10000.0, 1e-6, 32768, 32, 128, 4096},
    {"qwen3_moe", Family::qwen3_moe, 10000.0, 1e-6, 32768, 4, 0, 4096},
};

/// Fields that cannot change what a forward pass computes, accepted with any value:
/// - bookkeeping: `architectures` (the Python class; the tensors' names and shapes are checked instead),
///   `_name_or_path`, `transformers_version`, `torch_dtype` and `dtype` (the dtype Hugging Face loads in;
///   import reads each tensor's own dtype from the safetensors header), `_commit_hash`,
///   `_attn_implementation` and `_attn_implementation_autoset` (which attention kernel computes the same
///   softmax), `tokenizer_class`;
/// - `bos_token_id`, `eos_token_id`, `pad_token_id`: token ids for a generation loop, not the model;
/// - `initializer_range`: the initialisation of untrained weights;
/// - `use_cache`: Hugging Face's KV-cache switch (lpurt always caches; the values are the same);
/// - `attention_dropout`: applied only in training;
/// - `return_dict`, `output_attentions`, `output_hidden_states`, `torchscript`: what Hugging Face returns,
///   not what it computes.
const char* const ignored_everywhere[] = {
    "architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash",
    "_attn_implementation", "_attn_implementation_autoset", "tokenizer_class", "bos_token_id", "eos_token_id",
    "pad_token_id", "initializer_range", "use_cache", "attention_dropout", "return_dict", "output_attentions",
    "output_hidden_states", "torchscript"};
/// Per model type:
/// - llama `pretraining_tp`: Llama's pretraining split its matmuls in slices that are summed again, the
///   same linear map;
/// - mixtral, qwen3_moe `output_router_logits`, `router_aux_loss_coef`: the load-balancing loss of
///   training; mixtral `router_jitter_noise`: router noise applied only in training.
const std::map<Family, std::vector<const char*>> ignored_per_family = {
    {Family::llama, {"pretraining_tp"}},
    {Family::mixtral, {"output_router_logits", "router_aux_loss_coef", "router_jitter_noise"}},
    {Family::qwen3_moe, {"output_router_logits", "router_aux_loss_coef"}},
};

/// A value for a message: short, one line.
std::string shown(const json& value) {
  std::string text = value.dump();
  return text.size() > 60 ? text.substr(0, 57) + "..." : text;
}

/// The fields of one JSON object (the config, or a rope object inside it, whose keys are named
/// "rope_scaling.factor"), remembering which were looked at so that the others can be refused.
class Fields {
 public:
  Fields(const json& object, std::string file, std::string prefix = "")
      : object_(object), file_(std::move(file)), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw FileError(file_ + ": \"" + prefix_ + key + "\" " + what);
  }
  const std::string& file() const { return file_; }

  /// Present with a value other than null.
  bool given(const std::string& key) const {
    const auto it = object_.find(key);
    return it != object_.end() && !it->is_null();
  }
  /// The value, or nullptr when absent or null; the key counts as known from now on.
  const json* take(const std::string& key) {
    used_.insert(key);
    const auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }
  int64_t integer(const std::string& key, std::optional<int64_t> fallback) {
    const json* v = take(key);
    if (v == nullptr) return required(key, fallback);
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      fail(key, "is " + shown(*v) + ", larger than any size lpurt handles");
    if (!v->is_number_integer()) fail(key, "is " + shown(*v) + ", expected an integer");
    return v->get<int64_t>();
  }
  double number(const std::string& key, std::optional<double> fallback) {
    const json* v = take(key);
    if (v == nullptr) return required(key, fallback);
    if (!v->is_number()) fail(key, "is " + shown(*v) + ", expected a number");
    return v->get<double>();
  }
  bool flag(const std::string& key, bool fallback) {
    const json* v = take(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) fail(key, "is " + shown(*v) + ", expected true or false");
    return v->get<bool>();
  }
  std::string text(const std::string& key, std::optional<std::string> fallback) {
    const json* v = take(key);
    if (v == nullptr) return required(key, fallback);
    if (!v->is_string()) fail(key, "is " + shown(*v) + ", expected a string");
    return v->get<std::string>();
  }
  void ignore(const char* key) { used_.insert(key); }

  /// Throws naming the first key (in sorted order) that nothing looked at.
  void refuse_unknown(const std::string& model_type) const {
    for (const auto& item : object_.items())
      if (used_.count(item.key()) == 0)
        fail(item.key(), "is not a field lpurt knows for model_type \"" + model_type +
                             "\" (it might change the model's numerics); remove it from the file if it does not");
  }

 private:
  template <typename T>
  T required(const std::string& key, const std::optional<T>& fallback) const {
    if (!fallback) fail(key, "is missing; lpurt needs it");
    return *fallback;
  }

  const json& object_;
  std::string file_, prefix_;
  std::set<std::string> used_;
};

/// SPEC's attribute names in ModelConfig::validate's messages, as the config.json fields they come from.
std::string with_hf_names(const std::string& message, const char* experts_field) {
  const std::map<std::string, std::string> names = {
      {"n_layers", "num_hidden_layers"},
      {"n_heads", "num_attention_heads"},
      {"n_kv_heads", "num_key_value_heads"},
      {"max_seq_len", "max_position_embeddings"},
      {"norm_eps", "rms_norm_eps"},
      {"n_experts", experts_field},
      {"n_experts_per_token", "num_experts_per_tok"},
      {"rope_scaling_factor", "rope_scaling.factor"},
      {"rope_low_freq_factor", "rope_scaling.low_freq_factor"},
      {"rope_high_freq_factor", "rope_scaling.high_freq_factor"},
      {"rope_original_max_position", "rope_scaling.original_max_position_embeddings"}};
  std::string out;
  std::size_t i = 0;
  while (i < message.size()) {
    std::size_t j = i;
    while (j < message.size() && (std::isalnum(static_cast<unsigned char>(message[j])) || message[j] == '_')) ++j;
    if (j == i) {
      out += message[i++];
      continue;
    }
    const std::string word = message.substr(i, j - i);
    const auto it = names.find(word);
    out += it == names.end() ? word : it->second;
    i = j;
  }
  return out;
}

/// A rope object: `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5, which also holds
/// rope_theta). Types "default" (no scaling) and "llama3" (SPEC format 2); every other type changes the
/// frequencies in a way lpurt does not compute, and is refused.
void read_rope_type(Fields& rope, const std::string& object_name, bool type_required, chip::RopeScaling& scaling) {
  std::optional<std::string> type;
  for (const char* key : {"rope_type", "type"}) {
    if (!rope.given(key)) {
      rope.take(key);
      continue;
    }
    const std::string t = rope.text(key, std::nullopt);
    if (type && *type != t) rope.fail(key, "is \"" + t + "\" but rope_type is \"" + *type + "\"");
    type = t;
  }
  if (!type && type_required) rope.fail("rope_type", "is missing from " + object_name);
  if (rope.given("partial_rotary_factor") && rope.number("partial_rotary_factor", std::nullopt) != 1.0)
    rope.fail("partial_rotary_factor", "is not 1: lpurt rotates the whole head");
  rope.take("partial_rotary_factor");
  if (!type || *type == "default") return;
  if (*type != "llama3")
    rope.fail(rope.given("rope_type") ? "rope_type" : "type",
              "is \"" + *type + "\": lpurt implements RoPE without scaling and with \"llama3\" scaling only");
  scaling.type = chip::RopeScalingType::llama3;
  scaling.factor = rope.number("factor", std::nullopt);
  scaling.low_freq_factor = rope.number("low_freq_factor", std::nullopt);
  scaling.high_freq_factor = rope.number("high_freq_factor", std::nullopt);
  scaling.original_max_position = rope.integer("original_max_position_embeddings", std::nullopt);
}

void read_rope(Fields& f, const FamilyDefaults& d, chip::ModelConfig& cfg) {
  double theta = d.rope_theta;
  if (const json* params = f.take("rope_parameters")) {
    if (f.given("rope_theta") || f.given("rope_scaling"))
      f.fail("rope_parameters", "is given together with rope_theta or rope_scaling; give one or the other");
    f.take("rope_theta"), f.take("rope_scaling");
    if (!params->is_object()) f.fail("rope_parameters", "is " + shown(*params) + ", expected an object");
    Fields rope(*params, f.file(), "rope_parameters.");
    theta = rope.number("rope_theta", d.rope_theta);
    read_rope_type(rope, "rope_parameters", false, cfg.rope_scaling);
    rope.refuse_unknown(d.model_type);
  } else {
    theta = f.number("rope_theta", d.rope_theta);
    if (const json* scaling = f.take("rope_scaling")) {
      if (!scaling->is_object()) f.fail("rope_scaling", "is " + shown(*scaling) + ", expected an object or null");
      Fields rope(*scaling, f.file(), "rope_scaling.");
      read_rope_type(rope, "rope_scaling", true, cfg.rope_scaling);
      rope.refuse_unknown(d.model_type);
    }
  }
  if (!(theta > 1.0 && theta < 1e12)) f.fail("rope_theta", "is " + format_number(theta) + ", expected a finite value > 1");
  cfg.rope_theta = static_cast<float>(theta);
  f.take("partial_rotary_factor");
  if (f.given("partial_rotary_factor")) f.fail("partial_rotary_factor", "is given: lpurt rotates the whole head");
}

}  // namespace

chip::ModelConfig parse_hf_config(const std::string& json_text, const std::string& file_name) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw FileError(file_name + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw FileError(file_name + ": is " + shown(j) + ", expected a JSON object");
  Fields f(j, file_name);
  const std::string model_type = f.text("model_type", std::nullopt);
  const FamilyDefaults* found = nullptr;
  for (const auto& d : families)
    if (model_type == d.model_type) found = &d;
  if (found == nullptr)
    f.fail("model_type", "is \"" + model_type + "\"; lpurt imports llama, mistral, mixtral, qwen2, qwen3 and qwen3_moe");
  const FamilyDefaults& d = *found;
  const Family family = d.family;
  if (f.given("quantization_config"))
    f.fail("quantization_config", "is given: a quantized checkpoint (GPTQ, AWQ, bitsandbytes, FP8, ...); lpurt "
                                  "imports float32, float16 or bfloat16 weights and quantizes them itself");
  if (f.given("auto_map"))
    f.fail("auto_map", "is given: the checkpoint brings its own modelling code, whose numerics lpurt cannot know");

  chip::ModelConfig cfg;
  switch (family) {
    case Family::llama:
    case Family::mistral: cfg.architecture = chip::Architecture::llama; break;
    case Family::mixtral: cfg.architecture = chip::Architecture::mixtral; break;
    case Family::qwen2: cfg.architecture = chip::Architecture::qwen2; break;
    case Family::qwen3: cfg.architecture = chip::Architecture::qwen3; break;
    case Family::qwen3_moe: cfg.architecture = chip::Architecture::qwen3_moe; break;
  }
  const bool moe = family == Family::mixtral || family == Family::qwen3_moe;
  cfg.vocab_size = f.integer("vocab_size", std::nullopt);
  cfg.hidden_size = f.integer("hidden_size", std::nullopt);
  cfg.n_layers = f.integer("num_hidden_layers", std::nullopt);
  cfg.n_heads = f.integer("num_attention_heads", std::nullopt);
  if (family == Family::qwen3_moe) {
    cfg.moe_intermediate_size = f.integer("moe_intermediate_size", std::nullopt);
    // Qwen3-MoE's intermediate_size is the width of the dense layers that mlp_only_layers would make
    // (refused below): recorded when given, the expert width otherwise.
    cfg.intermediate_size = f.integer("intermediate_size", cfg.moe_intermediate_size);
  } else {
    cfg.intermediate_size = f.integer("intermediate_size", std::nullopt);
  }
  // num_key_value_heads: null means num_attention_heads (every class); left out, the class's default.
  if (f.given("num_key_value_heads")) {
    cfg.n_kv_heads = f.integer("num_key_value_heads", std::nullopt);
  } else {
    const bool null = f.take("num_key_value_heads") == nullptr && j.contains("num_key_value_heads");
    cfg.n_kv_heads = null || d.num_key_value_heads == 0 ? cfg.n_heads : d.num_key_value_heads;
  }
  // head_dim: null or left out means hidden_size / num_attention_heads, except Qwen3's default of 128.
  // Stored only when it differs, so a file of the usual shape has no head_dim attribute (as a preset's).
  int64_t head_dim = d.head_dim;
  if (f.given("head_dim")) {
    head_dim = f.integer("head_dim", std::nullopt);
  } else if (j.contains("head_dim")) {
    head_dim = 0;
    f.take("head_dim");
  }
  if (head_dim != 0 && (cfg.n_heads <= 0 || cfg.hidden_size % cfg.n_heads != 0 || head_dim != cfg.hidden_size / cfg.n_heads))
    cfg.explicit_head_dim = head_dim;
  cfg.max_seq_len = f.integer("max_position_embeddings", d.max_position_embeddings);
  const double eps = f.number("rms_norm_eps", d.rms_norm_eps);
  if (!(eps > 0.0 && eps < 1.0)) f.fail("rms_norm_eps", "is " + format_number(eps) + ", expected 0 < rms_norm_eps < 1");
  cfg.norm_eps = static_cast<float>(eps);
  cfg.tie_word_embeddings = f.flag("tie_word_embeddings", false);
  // "swish" is SiLU under another name in transformers' activations table.
  const std::string act = f.text("hidden_act", std::string("silu"));
  if (act != "silu" && act != "swish")
    f.fail("hidden_act", "is \"" + act + "\"; lpurt's FFN uses SiLU (\"silu\")");
  read_rope(f, d, cfg);

  // Biases. Qwen2's q, k and v always carry one (its config has no field for it); Llama's and Qwen3's
  // attention_bias adds one to o_proj too, which SPEC format 2 does not have.
  if (family == Family::qwen2) cfg.attention_bias = true;
  if (family == Family::llama || family == Family::qwen3 || family == Family::qwen3_moe)
    if (f.flag("attention_bias", false))
      f.fail("attention_bias", "is true: it adds a bias to o_proj as well as to q, k and v; lpurt's model format has "
                               "q, k and v biases only (as Qwen2)");
  if (family == Family::llama && f.flag("mlp_bias", false))
    f.fail("mlp_bias", "is true: lpurt's FFN has no biases");
  cfg.qk_norm = family == Family::qwen3 || family == Family::qwen3_moe;

  // Layer kinds (transformers 4.53 and later write them): every layer must attend to every position.
  if (const json* kinds = f.take("layer_types")) {
    if (!kinds->is_array()) f.fail("layer_types", "is " + shown(*kinds) + ", expected a list");
    for (std::size_t i = 0; i < kinds->size(); ++i)
      if ((*kinds)[i] != "full_attention")
        f.fail("layer_types", "has " + shown((*kinds)[i]) + " at layer " + std::to_string(i) +
                                  ": lpurt has full attention only (no sliding window)");
  }
  // Sliding windows: Hugging Face masks keys more than sliding_window positions back. A window at least
  // max_position_embeddings long masks nothing lpurt can run; a shorter one would, and lpurt has none.
  // - mistral, mixtral: sliding_window applies to every layer when not null (Mistral 7B v0.1: 4096; v0.2
  //   and later: null; MistralConfig's default is 4096, MixtralConfig's null);
  // - qwen2, qwen3, qwen3_moe: only with use_sliding_window true, and then to the layers from
  //   max_window_layers on, unless layer_types (checked above) lists the layers' kinds.
  if (d.sliding_window || family == Family::mixtral) {
    // window 0: none (null).
    int64_t window = d.sliding_window.value_or(0);
    if (f.given("sliding_window")) {
      window = f.integer("sliding_window", std::nullopt);
      if (window < 1) f.fail("sliding_window", "is " + std::to_string(window) + ", expected a window >= 1 or null");
    } else if (j.contains("sliding_window")) {
      window = 0;
      f.take("sliding_window");
    }
    const bool applies_to_all = family == Family::mistral || family == Family::mixtral;
    bool applies = applies_to_all;
    if (!applies_to_all) {
      const bool use = f.flag("use_sliding_window", false);
      const int64_t first_windowed_layer = f.integer("max_window_layers", 28);
      applies = use && !j.contains("layer_types") && first_windowed_layer < cfg.n_layers;
    }
    if (applies && window != 0 && window < cfg.max_seq_len)
      f.fail(applies_to_all ? "sliding_window" : "use_sliding_window",
             (applies_to_all ? "is " + std::to_string(window) : "is true with sliding_window " + std::to_string(window)) +
                 ", less than max_position_embeddings (" + std::to_string(cfg.max_seq_len) +
                 "): Hugging Face masks keys further back than the window and lpurt has no sliding-window attention");
  }

  const char* experts_field = family == Family::mixtral ? "num_local_experts" : "num_experts";
  if (moe) {
    // Mixtral spells the expert count num_local_experts and Qwen3-MoE num_experts; transformers 5 maps
    // each name onto the other, so either is read, and both must agree.
    std::optional<int64_t> n_experts;
    for (const char* key : {"num_local_experts", "num_experts"}) {
      if (!f.given(key)) {
        f.take(key);
        continue;
      }
      const int64_t n = f.integer(key, std::nullopt);
      if (n_experts && *n_experts != n) f.fail(key, "is " + std::to_string(n) + " but the other expert count is " + std::to_string(*n_experts));
      n_experts = n;
    }
    if (!n_experts) f.fail(experts_field, "is missing; lpurt needs it");
    cfg.n_experts = *n_experts;
    cfg.n_experts_per_token = f.integer("num_experts_per_tok", std::nullopt);
  }
  if (family == Family::mixtral) cfg.norm_topk_prob = true;  // Mixtral renormalizes its top k weights
  if (family == Family::qwen3_moe) {
    cfg.norm_topk_prob = f.flag("norm_topk_prob", false);
    const int64_t step = f.integer("decoder_sparse_step", 1);
    if (step != 1)
      f.fail("decoder_sparse_step", "is " + std::to_string(step) + ": only every " + std::to_string(step) +
                                        "th layer would be an MoE layer; lpurt's qwen3_moe has experts in every layer");
    if (const json* dense = f.take("mlp_only_layers"); dense != nullptr && !(dense->is_array() && dense->empty()))
      f.fail("mlp_only_layers", "is " + shown(*dense) + ": dense layers in an MoE model; lpurt's qwen3_moe has experts in every layer");
  }

  for (const char* key : ignored_everywhere) f.ignore(key);
  if (const auto it = ignored_per_family.find(family); it != ignored_per_family.end())
    for (const char* key : it->second) f.ignore(key);
  f.ignore("model_type");
  f.refuse_unknown(model_type);
  try {
    cfg.validate();
  } catch (const chip::ConfigError& e) {
    throw FileError(file_name + ": " + with_hf_names(e.what(), experts_field));
  }
  return cfg;
}

chip::ModelConfig read_hf_config(const std::string& path) {
  return parse_hf_config(read_text_file(path, "Hugging Face config"), path);
}

}  // namespace lpurt::io
