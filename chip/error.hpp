#pragma once
/// \file
/// The root of lpurt's error hierarchy. Setup code throws a subclass of lpurt::Error whose message names
/// what failed and what was expected; `main` prints it once and exits with the error's code.

#include <stdexcept>
#include <string>

namespace lpurt {

/// Process exit codes, stable for scripts (CLI11 style: one code per failure class).
enum class ExitCode : int {
  success = 0,
  usage = 2,         ///< bad command line (CLI11 uses 105-ish codes; we map them to 2)
  input = 3,         ///< bad input file: not HDF5, wrong format, missing or malformed dataset, TOML syntax
  capacity = 4,      ///< a model or request that does not fit the hardware
  config = 5,        ///< an impossible configuration (layout, hardware parameter, rank count)
  io = 6,            ///< cannot write an output
  runtime = 7,       ///< a failure while running (a stuck peer, failing links, out of host memory)
  mpi = 8,           ///< an MPI call failed (runtime::MpiError names the call and the rank)
  internal = 70,     ///< a broken invariant: a bug in lpurt
};

/// Root of every error lpurt throws on purpose.
class Error : public std::runtime_error {
 public:
  Error(const std::string& message, ExitCode code) : std::runtime_error(message), code_(code) {}
  ExitCode code() const noexcept { return code_; }

 private:
  ExitCode code_;
};

namespace chip {
/// A configuration or hardware description that is invalid on its own.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& message) : Error(message, ExitCode::config) {}
};
/// A malformed job or system file: TOML syntax, an unknown key or a value of the wrong type (a value of
/// the right type that is impossible is a ConfigError).
class InputError : public Error {
 public:
  explicit InputError(const std::string& message) : Error(message, ExitCode::input) {}
};
/// Something does not fit the SRAM of a chip.
class CapacityError : public Error {
 public:
  explicit CapacityError(const std::string& message) : Error(message, ExitCode::capacity) {}
};
}  // namespace chip

}  // namespace lpurt

/// Always-on invariant check: a failure is a bug in lpurt, so it reports file and line and aborts.
#define LPURT_ASSERT(cond)                                                   \
  do {                                                                       \
    if (!(cond)) ::lpurt::detail_assert_fail(#cond, __FILE__, __LINE__);     \
  } while (false)

namespace lpurt {
/// A double for an error message, "%g" style: 1e+300, not std::to_string's 301 digits.
std::string format_number(double value);
[[noreturn]] void detail_assert_fail(const char* expression, const char* file, int line);
}
