// libFuzzer target: arbitrary text as a system file (TOML name = value lines). parse_system_file must return
// a validated ChipSpec or throw lpurt::Error naming the line: never crash.
#include <cstdint>
#include <string>

#include "chip/error.hpp"
#include "chip/hardware.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lpurt::chip::parse_system_file(std::string(reinterpret_cast<const char*>(data), size), "fuzz.toml");
  } catch (const lpurt::Error&) {
  }
  return 0;
}
