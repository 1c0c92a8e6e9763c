// libFuzzer target: arbitrary bytes as a job file. toml::parse must return a table or throw lpurt::Error
// naming the line: never crash, read out of bounds, overflow the stack or hang.
#include <cstdint>
#include <string>

#include "chip/error.hpp"
#include "jobs/toml.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lpurt::jobs::toml::parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz.toml");
  } catch (const lpurt::Error&) {
  }
  return 0;
}
