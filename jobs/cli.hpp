#pragma once
/// \file
/// The `lpurt` command line: parses argv with CLI11 and runs one subcommand. Kept apart from main() so
/// that main only sets up MPI and reports errors.

namespace lpurt::jobs {

/// Runs the command line; returns the process exit code. Throws lpurt::Error for failures.
int run_command_line(int argc, char** argv, int rank, int n_ranks);

}  // namespace lpurt::jobs
