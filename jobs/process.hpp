#pragma once
/// \file
/// Running a helper program (sbatch, gnuplot) without a shell, so that no path needs quoting.

#include <string>
#include <vector>

namespace lpurt::jobs {

struct ProgramResult {
  int exit_code = 0;   ///< the exit status, or 128 + signal; 127 if it could not be started
  std::string output;  ///< its standard output (and error, if asked), without the trailing newline
};

/// Runs argv[0] (found on PATH) with argv, waits, and returns its exit status and standard output;
/// `with_stderr` captures its standard error too instead of passing it through.
ProgramResult run_program(const std::vector<std::string>& argv, bool with_stderr = false);

}  // namespace lpurt::jobs
