#pragma once
/// \file
/// Every output lpurt writes goes through here: refuse to replace an existing file unless forced, write
/// to `<path>.tmp.<host>.<pid>`, and rename into place, so a killed writer leaves the old file or the
/// complete new one, never a partial file under the final name. The temporary file of a killed writer
/// on the same host is removed by the next write of the same path.

#include <functional>
#include <string>

namespace lpurt::io {

/// Throws FileError(ExitCode::io) if `path` exists and `force` is false. Call it before expensive work
/// so that a run does not compute for nothing.
void check_writable(const std::string& path, bool force);

/// check_writable, then `write(temporary_path)`, then an atomic rename onto `path`. On any failure the
/// temporary file is removed and the error is rethrown (lpurt errors prefixed with `path`).
void write_atomically(const std::string& path, bool force, const std::function<void(const std::string&)>& write);

}  // namespace lpurt::io
