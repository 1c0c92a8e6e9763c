// Hugging Face config.json -> ModelConfig (io/hf_config.hpp): each model type maps to SPEC's attributes
// with Hugging Face's defaults, and every field lpurt would otherwise ignore while it changes the
// numerics is refused with an error that names it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "io/error.hpp"
#include "io/hf_config.hpp"

using namespace lpurt;
using nlohmann::json;

namespace {

json llama() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", 1024},
          {"hidden_size", 128},
          {"intermediate_size", 384},
          {"num_hidden_layers", 3},
          {"num_attention_heads", 8},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 256},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 500000.0},
          {"hidden_act", "silu"},
          {"attention_bias", false},
          {"attention_dropout", 0.0},
          {"mlp_bias", false},
          {"pretraining_tp", 1},
          {"initializer_range", 0.02},
          {"bos_token_id", 1},
          {"eos_token_id", {2, 3}},
          {"pad_token_id", nullptr},
          {"tie_word_embeddings", false},
          {"torch_dtype", "bfloat16"},
          {"transformers_version", "4.45.0"},
          {"use_cache", true},
          {"rope_scaling", nullptr}};
}

json qwen3_moe() {
  return {{"model_type", "qwen3_moe"},     {"vocab_size", 512},          {"hidden_size", 64},
          {"intermediate_size", 256},      {"moe_intermediate_size", 32}, {"num_hidden_layers", 2},
          {"num_attention_heads", 4},      {"num_key_value_heads", 2},    {"head_dim", 32},
          {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-6},       {"rope_theta", 1000000.0},
          {"num_experts", 16},             {"num_experts_per_tok", 4},    {"norm_topk_prob", true},
          {"decoder_sparse_step", 1},      {"mlp_only_layers", json::array()},
          {"use_sliding_window", false},   {"sliding_window", nullptr},  {"max_window_layers", 2},
          {"output_router_logits", false}, {"router_aux_loss_coef", 0.001}, {"tie_word_embeddings", false}};
}

chip::ModelConfig parse(const json& j) { return io::parse_hf_config(j.dump(), "config.json"); }

std::string error_of(const json& j) {
  try {
    parse(j);
  } catch (const io::FileError& e) {
    return e.what();
  }
  return "no error";
}

#define EXPECT_REFUSED(config, text)                                    \
  do {                                                                  \
    const std::string message = error_of(config);                       \
    EXPECT_NE(message.find(text), std::string::npos) << message;       \
    EXPECT_EQ(message.rfind("config.json: ", 0), 0u) << message;        \
  } while (false)

}  // namespace

TEST(HfConfig, MapsLlamaFieldsToSpecAttributes) {
  const chip::ModelConfig c = parse(llama());
  EXPECT_EQ(c.architecture, chip::Architecture::llama);
  EXPECT_EQ(c.vocab_size, 1024);
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.intermediate_size, 384);
  EXPECT_EQ(c.n_layers, 3);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.max_seq_len, 256);
  EXPECT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.explicit_head_dim, 0);  // D / H: no head_dim attribute, as a preset's file
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_scaling.type, chip::RopeScalingType::none);
}

TEST(HfConfig, LeftOutFieldsTakeHuggingFacesDefaultsForTheModelType) {
  json j = llama();
  for (const char* key : {"num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                          "tie_word_embeddings", "hidden_act"})
    j.erase(key);
  chip::ModelConfig c = parse(j);
  EXPECT_EQ(c.n_kv_heads, 8);  // LlamaConfig: num_key_value_heads = num_attention_heads
  EXPECT_EQ(c.max_seq_len, 2048);
  EXPECT_EQ(c.norm_eps, 1e-6f);
  EXPECT_EQ(c.rope_theta, 10000.0f);

  json q = {{"model_type", "qwen3"},         {"vocab_size", 1024},    {"hidden_size", 128},
            {"intermediate_size", 384},       {"num_hidden_layers", 2}, {"num_attention_heads", 8},
            {"num_key_value_heads", nullptr}};
  c = parse(q);
  EXPECT_EQ(c.explicit_head_dim, 128);  // Qwen3Config's head_dim default, not D / H = 16
  EXPECT_EQ(c.n_kv_heads, 8);           // null: num_attention_heads
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.max_seq_len, 32768);
  q.erase("num_key_value_heads");
  q["num_attention_heads"] = 32;
  EXPECT_EQ(parse(q).n_kv_heads, 32);  // left out: Qwen3Config's default
}

TEST(HfConfig, MapsEachFamilysImpliedFeatures) {
  json mistral = llama();
  mistral["model_type"] = "mistral";
  for (const char* key : {"attention_bias", "mlp_bias", "pretraining_tp"}) mistral.erase(key);
  mistral["sliding_window"] = nullptr;  // Mistral 7B v0.2 and later
  EXPECT_EQ(parse(mistral).architecture, chip::Architecture::llama);

  json qwen2 = mistral;
  qwen2["model_type"] = "qwen2";
  qwen2["use_sliding_window"] = false;
  qwen2["sliding_window"] = 4096;  // ignored without use_sliding_window, as Qwen2.5's configs have it
  qwen2["max_window_layers"] = 21;
  qwen2["tie_word_embeddings"] = true;
  chip::ModelConfig c = parse(qwen2);
  EXPECT_EQ(c.architecture, chip::Architecture::qwen2);
  EXPECT_TRUE(c.attention_bias);  // Qwen2's q, k, v always have a bias
  EXPECT_FALSE(c.qk_norm);
  EXPECT_TRUE(c.tie_word_embeddings);

  json mixtral = mistral;
  mixtral["model_type"] = "mixtral";
  mixtral["num_local_experts"] = 8;
  mixtral["num_experts_per_tok"] = 2;
  mixtral["router_jitter_noise"] = 0.0;
  mixtral["output_router_logits"] = false;
  c = parse(mixtral);
  EXPECT_EQ(c.architecture, chip::Architecture::mixtral);
  EXPECT_EQ(c.n_experts, 8);
  EXPECT_EQ(c.n_experts_per_token, 2);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.ffn_size(), 384);

  c = parse(qwen3_moe());
  EXPECT_EQ(c.architecture, chip::Architecture::qwen3_moe);
  EXPECT_EQ(c.n_experts, 16);
  EXPECT_EQ(c.n_experts_per_token, 4);
  EXPECT_EQ(c.moe_intermediate_size, 32);
  EXPECT_EQ(c.ffn_size(), 32);
  EXPECT_EQ(c.explicit_head_dim, 32);  // != D / H = 16
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.norm_topk_prob);
  json moe = qwen3_moe();
  moe.erase("norm_topk_prob");
  EXPECT_FALSE(parse(moe).norm_topk_prob);  // Qwen3MoeConfig's default: the full softmax's weights
}

TEST(HfConfig, ReadsLlama3RopeScalingInBothSpellings) {
  json j = llama();
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 64}};
  chip::ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, chip::RopeScalingType::llama3);
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position, 64);
  // transformers 5: rope_parameters holds rope_theta and the scaling.
  json v5 = llama();
  v5.erase("rope_theta");
  v5.erase("rope_scaling");
  v5["rope_parameters"] = j["rope_scaling"];
  v5["rope_parameters"]["rope_theta"] = 250000.0;
  c = parse(v5);
  EXPECT_EQ(c.rope_theta, 250000.0f);
  EXPECT_EQ(c.rope_scaling.type, chip::RopeScalingType::llama3);
  EXPECT_EQ(c.rope_scaling.original_max_position, 64);
  v5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  c = parse(v5);
  EXPECT_EQ(c.rope_scaling.type, chip::RopeScalingType::none);
  EXPECT_EQ(c.rope_theta, 1e6f);
}

TEST(HfConfig, RefusesWhatLpurtWouldSilentlyIgnore) {
  json j = llama();
  j["model_type"] = "gemma";
  EXPECT_REFUSED(j, "\"model_type\" is \"gemma\"; lpurt imports llama, mistral, mixtral, qwen2, qwen3 and qwen3_moe");

  j = llama();
  j["model_type"] = "mistral";
  for (const char* key : {"attention_bias", "mlp_bias", "pretraining_tp"}) j.erase(key);
  j["max_position_embeddings"] = 32768;
  j["sliding_window"] = 4096;  // Mistral 7B v0.1
  EXPECT_REFUSED(j, "\"sliding_window\" is 4096, less than max_position_embeddings (32768)");
  j["sliding_window"] = 32768;  // masks nothing within the context
  EXPECT_EQ(parse(j).max_seq_len, 32768);
  j.erase("sliding_window");  // MistralConfig's default window is 4096
  EXPECT_REFUSED(j, "\"sliding_window\" is 4096");

  json q = qwen3_moe();
  q["use_sliding_window"] = true;
  q["sliding_window"] = 64;
  q["max_window_layers"] = 0;
  EXPECT_REFUSED(q, "\"use_sliding_window\" is true with sliding_window 64, less than max_position_embeddings (128)");
  q["max_window_layers"] = 2;  // no layer from 2 on: Hugging Face windows none
  EXPECT_EQ(parse(q).n_layers, 2);
  q = qwen3_moe();
  q["layer_types"] = {"full_attention", "sliding_attention"};
  EXPECT_REFUSED(q, "\"layer_types\" has \"sliding_attention\" at layer 1");

  j = llama();
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  EXPECT_REFUSED(j, "\"rope_scaling.type\" is \"yarn\": lpurt implements RoPE without scaling and with \"llama3\"");
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  EXPECT_REFUSED(j, "\"rope_scaling.rope_type\" is \"linear\"");
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0}};
  EXPECT_REFUSED(j, "\"rope_scaling.original_max_position_embeddings\" is missing");
  j["rope_scaling"]["original_max_position_embeddings"] = 8192;
  j["rope_scaling"]["attention_factor"] = 1.0;
  EXPECT_REFUSED(j, "\"rope_scaling.attention_factor\" is not a field lpurt knows");

  j = llama();
  j["attention_bias"] = true;
  EXPECT_REFUSED(j, "\"attention_bias\" is true: it adds a bias to o_proj as well");
  j = llama();
  j["mlp_bias"] = true;
  EXPECT_REFUSED(j, "\"mlp_bias\" is true");
  j = llama();
  j["hidden_act"] = "gelu";
  EXPECT_REFUSED(j, "\"hidden_act\" is \"gelu\"");
  j = llama();
  j["partial_rotary_factor"] = 0.5;
  EXPECT_REFUSED(j, "\"partial_rotary_factor\"");
  j = llama();
  j["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}};
  EXPECT_REFUSED(j, "\"quantization_config\" is given: a quantized checkpoint");
  j = llama();
  j["auto_map"] = {{"AutoModelForCausalLM", "modeling_x.XForCausalLM"}};
  EXPECT_REFUSED(j, "\"auto_map\" is given");
  j = llama();
  j["sliding_window"] = 4096;  // not a Llama field: unknown
  EXPECT_REFUSED(j, "\"sliding_window\" is not a field lpurt knows for model_type \"llama\"");
  j = llama();
  j["use_fancy_attention"] = true;
  EXPECT_REFUSED(j, "\"use_fancy_attention\" is not a field lpurt knows");

  q = qwen3_moe();
  q["mlp_only_layers"] = {1};
  EXPECT_REFUSED(q, "\"mlp_only_layers\" is [1]: dense layers in an MoE model");
  q = qwen3_moe();
  q["decoder_sparse_step"] = 2;
  EXPECT_REFUSED(q, "\"decoder_sparse_step\" is 2");
  q = qwen3_moe();
  q["attention_bias"] = true;
  EXPECT_REFUSED(q, "\"attention_bias\" is true");
}

TEST(HfConfig, ErrorsOnValuesNameTheHuggingFaceField) {
  json j = llama();
  j.erase("hidden_size");
  EXPECT_REFUSED(j, "\"hidden_size\" is missing");
  j = llama();
  j["num_hidden_layers"] = "three";
  EXPECT_REFUSED(j, "\"num_hidden_layers\" is \"three\", expected an integer");
  j = llama();
  j["num_key_value_heads"] = 3;  // ModelConfig::validate's n_kv_heads, in Hugging Face's words
  EXPECT_REFUSED(j, "num_attention_heads (8) must be a multiple of num_key_value_heads (3)");
  j = llama();
  j["max_position_embeddings"] = 0;
  EXPECT_REFUSED(j, "max_position_embeddings: got 0");
  j = llama();
  j["rms_norm_eps"] = 0;
  EXPECT_REFUSED(j, "\"rms_norm_eps\" is 0");
  json q = qwen3_moe();
  q["num_experts_per_tok"] = 17;
  EXPECT_REFUSED(q, "num_experts_per_tok: got 17, expected 1 .. 16");
  q = qwen3_moe();
  q["num_local_experts"] = 8;
  EXPECT_REFUSED(q, "\"num_experts\" is 16 but the other expert count is 8");
  EXPECT_NE(std::string(error_of(json::array())).find("expected a JSON object"), std::string::npos);
  try {
    io::parse_hf_config("{\"model_type\": ", "config.json");
    ADD_FAILURE() << "no error";
  } catch (const io::FileError& e) {
    EXPECT_NE(std::string(e.what()).find("config.json: not valid JSON"), std::string::npos) << e.what();
  }
}
