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

enum class Architecture { llama, mixtral };

const char* architecture_name(Architecture a);
/// Parses "llama" or "mixtral"; throws ConfigError naming the accepted values otherwise.
Architecture parse_architecture(const std::string& name);

/// Model hyper-parameters, with SPEC's attribute names.
struct ModelConfig {
  Architecture architecture = Architecture::llama;
  int64_t vocab_size = 0;         ///< V
  int64_t hidden_size = 0;        ///< D
  int64_t intermediate_size = 0;  ///< F (per expert for mixtral)
  int64_t n_layers = 0;           ///< L
  int64_t n_heads = 0;            ///< H
  int64_t n_kv_heads = 0;         ///< Hkv
  int64_t max_seq_len = 0;        ///< S
  int64_t n_experts = 0;          ///< E (mixtral only)
  int64_t n_experts_per_token = 0;///< k (mixtral only)
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;

  int64_t head_dim() const { return hidden_size / n_heads; }
  int64_t q_size() const { return n_heads * head_dim(); }      ///< rows of wq
  int64_t kv_size() const { return n_kv_heads * head_dim(); }  ///< rows of wk and wv
  int64_t heads_per_kv_head() const { return n_heads / n_kv_heads; }
  bool is_moe() const { return architecture == Architecture::mixtral; }

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

/// Built-in model shapes: tiny, tiny-mixtral (tests), small (~100M), tinyllama-1.1b, llama2-7b, llama2-70b,
/// mixtral-8x7b (shapes from the public model cards).
ModelConfig model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

enum class TensorKind {
  embedding, attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down, router, final_norm, lm_head,
};

/// One tensor of the model file: a quantized matrix (int8 weight [rows, cols] + float32 scale [rows])
/// or a float32 array (norm gains [rows], router [rows, cols]).
struct TensorId {
  TensorKind kind = TensorKind::embedding;
  int64_t layer = -1;   ///< -1 for model-level tensors
  int64_t expert = -1;  ///< mixtral expert index for w_gate/w_up/w_down, else -1
};

struct TensorShape {
  int64_t rows = 0;
  int64_t cols = 1;  ///< 1 for vectors
};

bool is_quantized_matrix(TensorKind kind);
TensorShape tensor_shape(const ModelConfig& cfg, const TensorId& id);
/// HDF5 path of the tensor: the group of a quantized matrix ("/layers/3/wq", holding weight and scale)
/// or the float dataset ("/layers/3/attn_norm").
std::string tensor_path(const TensorId& id);
/// Every tensor of the model, in file order (embedding, layers 0..L-1, final_norm, lm_head).
std::vector<TensorId> model_tensors(const ModelConfig& cfg);
/// The tensors of one layer, in execution order.
std::vector<TensorId> layer_tensors(const ModelConfig& cfg, int64_t layer);
/// Bytes as stored: int8 weights + float32 scales, or float32 elements.
int64_t tensor_bytes(const ModelConfig& cfg, const TensorId& id);

}  // namespace lpurt::chip
