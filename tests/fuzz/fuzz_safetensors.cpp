// libFuzzer target: arbitrary bytes as the model.safetensors of a checkpoint whose config.json is a fixed
// tiny Llama (1 layer, hidden size 4, vocabulary 8). HfCheckpoint::open must accept the file (then every
// tensor must read, or throw lpurt::Error for a value that is not finite) or throw lpurt::Error: never
// crash, hang, leak or read outside the file.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "chip/error.hpp"
#include "io/hf_checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const std::string d = "/tmp/lpurt_fuzz_safetensors_" + std::to_string(::getpid());
    std::filesystem::create_directories(d);
    if (std::FILE* f = std::fopen((d + "/config.json").c_str(), "wb")) {
      std::fputs("{\"model_type\": \"llama\", \"vocab_size\": 8, \"hidden_size\": 4, \"intermediate_size\": 4, "
                 "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
                 "\"max_position_embeddings\": 16}",
                 f);
      std::fclose(f);
    }
    return d;
  }();
  if (std::FILE* f = std::fopen((dir + "/model.safetensors").c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    return 0;
  }
  try {
    auto checkpoint = lpurt::io::HfCheckpoint::open(dir);
    const auto& cfg = checkpoint->config();
    for (const auto& id : lpurt::chip::model_tensors(cfg)) {
      const auto s = lpurt::chip::tensor_shape(cfg, id);
      if (lpurt::chip::is_quantized_matrix(id.kind)) {
        std::vector<int8_t> weight(static_cast<std::size_t>(s.rows * s.cols));
        std::vector<float> scale(static_cast<std::size_t>(s.rows));
        checkpoint->read_weight(id, 0, s.rows, 0, s.cols, weight.data());
        checkpoint->read_scale(id, 0, s.rows, scale.data());
      } else {
        std::vector<float> values(static_cast<std::size_t>(s.rows * s.cols));
        checkpoint->read_floats(id, 0, s.rows, values.data());
      }
    }
  } catch (const lpurt::Error&) {
  }
  return 0;
}
