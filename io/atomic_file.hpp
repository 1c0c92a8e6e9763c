#pragma once
/// \file
/// Every output lpurt writes goes through here: refuse to replace an existing file unless forced, write
/// to `<path>.tmp.<host>.<pid>`, and rename into place, so a killed writer leaves the old file or the
/// complete new one, never a partial file under the final name. A killed writer's temporary file stays
/// until remove_stale_temporaries (a sweep calls it on its points folder) or the user removes it.

#include <functional>
#include <string>

namespace lpurt::io {

/// Throws FileError(ExitCode::io) if `path` exists and `force` is false. Call it before expensive work
/// so that a run does not compute for nothing.
void check_writable(const std::string& path, bool force);

/// Removes the temporary files in `folder` of writers on this host that have died (their pid is gone).
/// Only for folders lpurt owns: a process in another PID namespace on the same host name would look dead.
void remove_stale_temporaries(const std::string& folder);

/// Creates `folder` and its parents if missing; throws FileError(ExitCode::io) naming it otherwise.
void create_folder(const std::string& folder);

/// write_atomically of a text file's whole contents (job files, plot scripts and data).
void write_text_atomically(const std::string& path, const std::string& contents, bool force);

/// check_writable, then `write(temporary_path)`, then an atomic rename onto `path`. On any failure the
/// temporary file is removed and the error is rethrown (lpurt errors prefixed with `path`).
void write_atomically(const std::string& path, bool force, const std::function<void(const std::string&)>& write);

/// The same for a file written over time (a result file filled while the run goes): the constructor
/// checks `path` (check_writable) and names the temporary file; commit() renames it into place. Destroyed
/// without commit() (an error unwinding), it removes the temporary file.
class AtomicFile {
 public:
  AtomicFile(std::string path, bool force);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  const std::string& path() const { return path_; }
  const std::string& temporary_path() const { return temporary_path_; }
  /// Renames the (closed) temporary file onto path(); throws FileError naming both if it cannot.
  void commit();

 private:
  std::string path_;
  std::string temporary_path_;
  bool committed_ = false;
};

}  // namespace lpurt::io
