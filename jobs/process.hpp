#pragma once
/// \file
/// Running a helper program (sbatch, gnuplot, lpurt itself) without a shell, so that no path needs
/// quoting. posix_spawn, not fork: the caller may be an MPI rank, whose memory a fork would copy.

#include <string>
#include <vector>

namespace lpurt::jobs {

struct ProgramResult {
  int exit_code = 0;       ///< the exit status; 127 if the program could not be started
  int signal = 0;          ///< the signal that ended it, or 0
  bool timed_out = false;  ///< killed after the time limit
  std::string output;      ///< its standard output (and error, if asked), without the trailing newline
};

/// Runs argv[0] (found on PATH) with argv and waits for it, at most `timeout_s` seconds (0: no limit;
/// then it is killed). `with_stderr` captures its standard error too instead of passing it through.
ProgramResult run_program(const std::vector<std::string>& argv, bool with_stderr = false, double timeout_s = 0);

}  // namespace lpurt::jobs
