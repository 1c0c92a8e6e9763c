#pragma once
/// \file
/// Errors of the io module.

#include "chip/error.hpp"

namespace lpurt::io {

/// A file that cannot be read or written, or whose content is not what SPEC says.
class FileError : public Error {
 public:
  explicit FileError(const std::string& message, ExitCode code = ExitCode::input) : Error(message, code) {}
};

}  // namespace lpurt::io
