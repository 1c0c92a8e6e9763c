#pragma once
/// \file
/// A Hugging Face `config.json` as a chip::ModelConfig (SPEC "Importing checkpoints"), for `lpurt import`
/// and `lpurt gen-model --hf-config`. Model types: llama, mistral, mixtral, qwen2, qwen3, qwen3_moe.
///
/// Every field is either mapped, checked to be one lpurt computes exactly, ignored because it cannot
/// change the numerics of inference (the list and the reasons are in hf_config.cpp), or refused: a
/// sliding window that would mask positions, a rope scaling other than llama3, an o_proj or MLP bias, an
/// activation other than SiLU, dense layers in a Qwen3-MoE model, a quantized checkpoint, and any field
/// lpurt does not know. A field left out takes the default of Hugging Face's configuration class for the
/// model type, except the shape fields (vocab_size, hidden_size, intermediate_size, num_hidden_layers,
/// num_attention_heads, and the expert counts and widths), which must be given. Every error names the
/// file and the Hugging Face field.
///
/// Example usage:
/// \code
///   lpurt::chip::ModelConfig cfg = lpurt::io::read_hf_config("Qwen3-0.6B/config.json");
/// \endcode

#include <string>

#include "chip/model_config.hpp"

namespace lpurt::io {

/// Reads and maps the config.json at `path`; throws FileError naming the file and the field.
chip::ModelConfig read_hf_config(const std::string& path);

/// Maps the text of a config.json; `file_name` names it in errors.
chip::ModelConfig parse_hf_config(const std::string& json_text, const std::string& file_name);

}  // namespace lpurt::io
