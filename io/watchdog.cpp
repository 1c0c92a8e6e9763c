#include "io/watchdog.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace lpurt::io {

namespace {
std::string& error_label() {
  static std::string label;
  return label;
}
}  // namespace

void set_error_label(const std::string& label) { error_label() = label; }

Watchdog::Watchdog(double seconds, std::string message, ExitCode code) {
  if (seconds <= 0) return;
  thread_ = std::thread([this, seconds, message = std::move(message), code] {
    std::unique_lock<std::mutex> lock(mutex_);
    if (done_changed_.wait_for(lock, std::chrono::duration<double>(seconds), [this] { return done_; })) return;
    std::fprintf(stderr, "%serror: %s\n", error_label().c_str(), message.c_str());
    std::fflush(stderr);
    std::_Exit(static_cast<int>(code));
  });
}

Watchdog::~Watchdog() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
  }
  done_changed_.notify_one();
  thread_.join();
}

double hdf5_open_timeout_s() {
  const char* text = std::getenv("LPURT_HDF5_TIMEOUT_S");
  if (text == nullptr) return 60;
  char* end = nullptr;
  const double s = std::strtod(text, &end);
  return end != text && *end == '\0' && s >= 0 ? s : 60;
}

}  // namespace lpurt::io
