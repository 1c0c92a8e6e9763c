#pragma once
/// \file
/// A time limit on a call that cannot be interrupted: HDF5 1.10.8 can spin forever inside H5Aread on
/// some corrupt files (tests/fuzz/findings). If the guarded scope does not end in time, the watchdog
/// prints one error line and ends the process, so that bad input never hangs a job.

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "chip/error.hpp"

namespace lpurt::io {

/// How this process names itself at the start of an error line ("[rank 3/8] "), set once by main.
void set_error_label(const std::string& label);

class Watchdog {
 public:
  /// Unless destroyed within `seconds` (0: no limit), prints "<label>error: <message>" and exits with
  /// `code` (std::_Exit: the stuck call holds locks that a normal exit could wait on).
  Watchdog(double seconds, std::string message, ExitCode code);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  std::mutex mutex_;
  std::condition_variable done_changed_;
  bool done_ = false;
  std::thread thread_;
};

/// Seconds a model file may take to open and validate: LPURT_HDF5_TIMEOUT_S, default 60.
double hdf5_open_timeout_s();

}  // namespace lpurt::io
