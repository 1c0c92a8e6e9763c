// libFuzzer target: arbitrary bytes as a Hugging Face config.json. parse_hf_config must return a valid
// configuration or throw lpurt::Error: never crash, hang or leak.
#include <cstdint>
#include <string>

#include "chip/error.hpp"
#include "io/hf_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const lpurt::chip::ModelConfig cfg =
        lpurt::io::parse_hf_config(std::string(reinterpret_cast<const char*>(data), size), "config.json");
    cfg.validate();  // what was returned is a configuration lpurt accepts
  } catch (const lpurt::Error&) {
  }
  return 0;
}
