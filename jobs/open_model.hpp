#pragma once
/// \file
/// Opening a model file that may be damaged. HDF5 1.10.8 crashes (heap overflows, use after free) or
/// loops forever on some corrupt files (tests/fuzz/findings), and no check inside the process can stop
/// that. So a child process (`lpurt check-model FILE`) first opens and validates the file under a time
/// limit; the file is opened here only if the child accepted it, and its failure otherwise becomes one
/// clear error.

#include <memory>
#include <string>

#include "io/model_file.hpp"

namespace lpurt::jobs {

/// Seconds the check may take: LPURT_HDF5_TIMEOUT_S, default 60.
double model_check_timeout_s();

/// Checks `path` in a child process (once per path and process), then opens it. Throws FileError
/// (ExitCode::input, or the child's code) naming the file: the child's own error, a crash of the HDF5
/// library, or the time limit.
std::unique_ptr<io::ModelFile> open_model_file(const std::string& path);

/// What `lpurt check-model FILE` does in the child: open and validate, print one line describing it.
int check_model_command(const std::string& path);

}  // namespace lpurt::jobs
