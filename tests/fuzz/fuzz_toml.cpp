// libFuzzer target: arbitrary bytes as a job or system file's TOML. parse_toml must return a table or
// throw lpurt::Error naming the line and column: never crash, overflow the stack (toml++ recurses once
// per key part, which the reader bounds first) or hang. The entries are then walked in file order.
#include <cstdint>
#include <string>

#include "chip/error.hpp"
#include "chip/toml_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const toml::table root = lpurt::chip::parse_toml(std::string(reinterpret_cast<const char*>(data), size), "fuzz.toml");
    for (const auto& entry : lpurt::chip::flatten_in_file_order(root))
      lpurt::chip::toml_origin(*entry.value, "fuzz.toml");
  } catch (const lpurt::Error&) {
  }
  return 0;
}
