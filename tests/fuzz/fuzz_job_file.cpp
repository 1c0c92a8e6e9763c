// libFuzzer target: arbitrary text as a job file. parse_study must return a validated study (every point
// expanded) or throw lpurt::Error naming the key and the line: never crash, hang or allocate without
// bound. Paths in the text are resolved against a folder that does not exist, so nothing is read or
// written except what an absolute path in the input names (read only, size-checked).
#include <cstdint>
#include <string>

#include "chip/error.hpp"
#include "jobs/study.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lpurt::jobs::parse_study(std::string(reinterpret_cast<const char*>(data), size), "/nonexistent-lpurt-fuzz/job.toml");
  } catch (const lpurt::Error&) {
  }
  return 0;
}
