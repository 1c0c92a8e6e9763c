#pragma once
/// \file
/// Small text inputs (job files, system files): read whole, after checking that the path is a regular
/// file of sane size, so that a path such as /dev/zero or a multi-gigabyte file fails with a clear error
/// instead of hanging or exhausting memory.

#include <cstdint>
#include <string>

namespace lpurt::io {

/// The contents of `path`. Throws FileError(ExitCode::input) naming `what` and the path if it cannot be
/// read, is not a regular file, or is larger than `max_bytes`.
std::string read_text_file(const std::string& path, const std::string& what, int64_t max_bytes = 1 << 20);

}  // namespace lpurt::io
