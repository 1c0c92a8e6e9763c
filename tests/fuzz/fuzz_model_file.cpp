// libFuzzer target: arbitrary bytes as an HDF5 model file. ModelFile::open must either accept the file
// (then a few reads must work or throw lpurt::Error) or throw lpurt::Error: never crash, hang or leak.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "chip/error.hpp"
#include "io/model_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/lpurt_fuzz_model_" + std::to_string(::getpid()) + ".h5";
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    return 0;
  }
  try {
    auto file = lpurt::io::ModelFile::open(path);
    const auto& cfg = file->config();
    if (file->has_weights() && cfg.hidden_size <= 4096) {
      std::vector<float> norm(static_cast<std::size_t>(cfg.hidden_size));
      file->read_floats({lpurt::chip::TensorKind::final_norm}, 0, cfg.hidden_size, norm.data());
      std::vector<int8_t> row(static_cast<std::size_t>(cfg.hidden_size));
      file->read_weight({lpurt::chip::TensorKind::embedding}, 0, 1, 0, cfg.hidden_size, row.data());
    }
  } catch (const lpurt::Error&) {
  }
  return 0;
}
