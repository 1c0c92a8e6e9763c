#include "jobs/open_model.hpp"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>

#include "chip/model_config.hpp"
#include "chip/sram.hpp"
#include "io/error.hpp"
#include "io/tokenizer.hpp"
#include "jobs/process.hpp"

namespace lpurt::jobs {

double model_check_timeout_s() {
  const char* text = std::getenv("LPURT_HDF5_TIMEOUT_S");
  if (text == nullptr) return 60;
  char* end = nullptr;
  const double s = std::strtod(text, &end);
  return end != text && *end == '\0' && s > 0 ? s : 60;
}

std::unique_ptr<io::ModelFile> open_model_file(const std::string& path) {
  static std::mutex mutex;
  static std::set<std::string> accepted;
  std::lock_guard<std::mutex> lock(mutex);
  if (accepted.count(path) == 0) {
    const double limit_s = model_check_timeout_s();
    // /proc/self/exe, not the path it names: that still works if lpurt was rebuilt during a long sweep.
    const ProgramResult r = run_program({"/proc/self/exe", "check-model", path}, true, limit_s);
    char limit[32];
    std::snprintf(limit, sizeof limit, "%g", limit_s);
    if (r.timed_out)
      throw io::FileError(path + ": opening and validating it took more than " + limit +
                          " s; the file is corrupt (HDF5 1.10 can loop forever on some damaged files; "
                          "LPURT_HDF5_TIMEOUT_S sets the limit)");
    if (r.signal != 0)
      throw io::FileError(path + ": the HDF5 library crashed reading it (signal " + std::to_string(r.signal) +
                          "); the file is corrupt");
    if (r.exit_code != 0) {
      // The child printed "[rank 0/1] error: <message>": pass the message on with its exit code.
      const std::string marker = "error: ";
      const auto at = r.output.rfind(marker);
      const std::string message = at == std::string::npos ? path + ": cannot be checked (exit " +
                                                                std::to_string(r.exit_code) + ")"
                                                          : r.output.substr(at + marker.size());
      throw io::FileError(message, static_cast<ExitCode>(r.exit_code));
    }
    accepted.insert(path);
  }
  return io::ModelFile::open(path);
}

int check_model_command(const std::string& path) {
  const auto file = io::ModelFile::open(path);
  file->check_float_data();
  const chip::ModelConfig& c = file->config();
  // An embedded tokenizer is loaded here too, so that a corrupt one fails in this child, not in a run.
  std::string tokenizer_text;
  if (const auto tokenizer = io::read_embedded_tokenizer(path)) {
    tokenizer->check_fits(c.vocab_size, path);
    tokenizer_text = ", SentencePiece tokenizer of " + std::to_string(tokenizer->vocab_size()) + " pieces";
  }
  std::printf("%s: %s, %lld layers, D=%lld, V=%lld, %lld parameters (%s)%s%s\n", path.c_str(),
              chip::architecture_name(c.architecture), static_cast<long long>(c.n_layers),
              static_cast<long long>(c.hidden_size), static_cast<long long>(c.vocab_size),
              static_cast<long long>(c.n_parameters()),
              chip::format_bytes(static_cast<double>(c.weight_bytes())).c_str(),
              file->has_weights() ? "" : ", configuration only", tokenizer_text.c_str());
  return 0;
}

}  // namespace lpurt::jobs
