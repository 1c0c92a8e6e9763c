#pragma once
/// \file
/// Every output lpurt writes goes through here: refuse to replace an existing file unless forced, write
/// to `<path>.tmp.<host>.<pid>`, and rename into place, so a killed writer leaves the old file or the
/// complete new one, never a partial file under the final name. A killed writer's temporary file stays
/// until the next write of the same path (AtomicFile removes its target's stale temporaries), or
/// remove_stale_temporaries (a sweep calls it on its points folder), or the user removes it.
/// Only regular files are ever replaced: a symbolic link, directory, device, FIFO or socket at the path is
/// refused, with or without --force.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>

namespace lpurt::io {

/// Throws FileError(ExitCode::io) if `path` exists and `force` is false, and whatever `force` is if it
/// is anything but a regular file (a symbolic link is not followed). Call it before expensive work so
/// that a run does not compute for nothing.
void check_writable(const std::string& path, bool force);

/// Removes `<path>.tmp.<this host>.<pid>` files whose pid is gone: the leftovers of killed writers of
/// this very target (AtomicFile calls it before writing).
void remove_stale_temporaries_of(const std::string& path);

/// Whether a process with this pid exists on this host (kill(pid, 0); a pid we may not signal exists).
bool process_alive(pid_t pid);

/// Bytes an unprivileged writer can still put on the file system that holds `folder` (statvfs);
/// throws FileError(ExitCode::io) naming the folder if it cannot be asked.
int64_t available_bytes(const std::string& folder);

/// This host's name, as temporary files and sweep claims record it.
std::string this_host();

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
