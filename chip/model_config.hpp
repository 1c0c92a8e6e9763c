#pragma once
/// \file
/// The shape of a transformer model (SPEC "Model file", root attributes) and the list of its tensors.
/// Everything that sizes a buffer, a dataset or an SRAM budget derives from ModelConfig, in one place.
///
/// Example usage:
/// \code
///   lpurt::chip::ModelConfig cfg = lpurt::chip::model_preset("tiny");
///   for (const auto& t : lpurt::chip::model_tensors(cfg)) std::puts(lpurt::chip::tensor_path(t).c_str());
/// \endcode

#include <cstdint>
#include <string>
#include <vector>

namespace lpurt::chip {

/// SPEC format 2 families. Llama 3 and 3.1 are `llama` (their differences are attributes: a large
/// vocabulary, rope scaling); Mistral is read as `llama`.
enum class Architecture { llama, mixtral, qwen2, qwen3, qwen3_moe };

const char* architecture_name(Architecture a);
/// Parses a SPEC architecture name ("mistral" reads as llama); throws ConfigError naming the accepted
/// values otherwise.
Architecture parse_architecture(const std::string& name);

/// RoPE frequency scaling (SPEC format 2, `rope_scaling_type`).
enum class RopeScalingType { none, llama3 };
const char* rope_scaling_name(RopeScalingType t);
/// Parses "none" or "llama3"; throws ConfigError otherwise.
RopeScalingType parse_rope_scaling(const std::string& name);

struct RopeScaling {
  RopeScalingType type = RopeScalingType::none;
  double factor = 1.0;                 ///< rope_scaling_factor
  double low_freq_factor = 1.0;        ///< rope_low_freq_factor
  double high_freq_factor = 1.0;       ///< rope_high_freq_factor
  int64_t original_max_position = 0;   ///< rope_original_max_position
};

/// Model hyper-parameters, with SPEC's attribute names (format 2; format 1 files leave the format-2
/// fields at their defaults, which are format 1's behaviour).
struct ModelConfig {
  Architecture architecture = Architecture::llama;
  int64_t vocab_size = 0;         ///< V
  int64_t hidden_size = 0;        ///< D
  int64_t intermediate_size = 0;  ///< F: dense FFN width; Mixtral's expert width
  int64_t n_layers = 0;           ///< L
  int64_t n_heads = 0;            ///< H
  int64_t n_kv_heads = 0;         ///< Hkv
  int64_t max_seq_len = 0;        ///< S
  int64_t n_experts = 0;          ///< E (MoE families only)
  int64_t n_experts_per_token = 0;///< k (MoE families only)
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  int64_t explicit_head_dim = 0;      ///< SPEC `head_dim`; 0: D / H
  bool attention_bias = false;        ///< wq, wk, wv carry a float32 bias (Qwen2)
  bool qk_norm = false;               ///< per-head RMSNorm of q and k before RoPE (Qwen3)
  bool tie_word_embeddings = false;   ///< no lm_head: the logits read the embedding table
  RopeScaling rope_scaling;
  int64_t moe_intermediate_size = 0;  ///< Fe, expert FFN width (qwen3_moe); 0: F
  bool norm_topk_prob = true;         ///< MoE weights: softmax over the k chosen (1) or over all E (0)

  int64_t head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : hidden_size / n_heads; }
  int64_t q_size() const { return n_heads * head_dim(); }      ///< rows of wq
  int64_t kv_size() const { return n_kv_heads * head_dim(); }  ///< rows of wk and wv
  int64_t heads_per_kv_head() const { return n_heads / n_kv_heads; }
  bool is_moe() const { return architecture == Architecture::mixtral || architecture == Architecture::qwen3_moe; }
  /// Width of one FFN: the dense FFN's, or one expert's.
  int64_t ffn_size() const { return is_moe() && moe_intermediate_size > 0 ? moe_intermediate_size : intermediate_size; }

  /// Checks every field against SPEC and against sanity bounds (so that an absurd file fails here,
  /// before anything is allocated). Throws ConfigError naming the field, its value and what was expected.
  void validate() const;

  /// Bytes of one layer's weights as stored on a chip (int8 matrices, float32 scales and vectors).
  int64_t layer_weight_bytes() const;
  /// Bytes of all weights of the model, as stored.
  int64_t weight_bytes() const;
  /// Number of parameters (matrix elements and vector elements; scales are not parameters).
  int64_t n_parameters() const;
};

/// Built-in model shapes: tiny, tiny-mixtral, tiny-qwen2, tiny-qwen3, tiny-qwen3-moe, tiny-llama3 (tests),
/// small (~100M), and from the public model cards and config.json files: tinyllama-1.1b, llama2-7b,
/// llama2-70b, mixtral-8x7b, llama3-8b, llama3.1-8b, llama3-70b, qwen3-32b, qwen3-30b-a3b, qwen3-235b-a22b.
ModelConfig model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

enum class TensorKind {
  embedding, attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down, router, final_norm, lm_head,
  wq_bias, wk_bias, wv_bias,  ///< float32 [rows of wq / wk / wv] (attention_bias)
  q_norm, k_norm,             ///< float32 [hd] per-head RMSNorm gains (qk_norm)
};

/// One tensor of the model file: a quantized matrix (int8 weight [rows, cols] + float32 scale [rows])
/// or a float32 array (norm gains and biases [rows], router [rows, cols]).
struct TensorId {
  TensorKind kind = TensorKind::embedding;
  int64_t layer = -1;   ///< -1 for model-level tensors
  int64_t expert = -1;  ///< MoE expert index for w_gate/w_up/w_down, else -1
};

struct TensorShape {
  int64_t rows = 0;
  int64_t cols = 1;  ///< 1 for vectors
};

bool is_quantized_matrix(TensorKind kind);
TensorShape tensor_shape(const ModelConfig& cfg, const TensorId& id);
/// HDF5 path of the tensor: the group of a quantized matrix ("/layers/3/wq", holding weight and scale)
/// or the float dataset ("/layers/3/attn_norm", "/layers/3/wq/bias").
std::string tensor_path(const TensorId& id);
/// The tensor that stores `id`'s values: with tied embeddings the lm_head is the embedding table.
TensorId stored_tensor(const ModelConfig& cfg, const TensorId& id);
/// Every tensor of the model, in file order (embedding, layers 0..L-1, final_norm, lm_head unless tied).
std::vector<TensorId> model_tensors(const ModelConfig& cfg);
/// The tensors of one layer, in execution order.
std::vector<TensorId> layer_tensors(const ModelConfig& cfg, int64_t layer);
/// Bytes as stored: int8 weights + float32 scales, or float32 elements.
int64_t tensor_bytes(const ModelConfig& cfg, const TensorId& id);

}  // namespace lpurt::chip
