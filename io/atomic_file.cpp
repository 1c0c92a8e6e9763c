#include "io/atomic_file.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "io/error.hpp"

namespace lpurt::io {

namespace {

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

void check_writable(const std::string& path, bool force) {
  // lstat: a symbolic link is judged itself, not what it points to. Replacing a link would silently cut
  // it, and replacing a device, FIFO or socket with a file would break whatever uses it (as root even
  // /dev/null), so --force never applies to them and the messages do not suggest it.
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISLNK(st.st_mode)) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(path, ec);
    throw FileError(path + ": is a symbolic link" + (ec ? std::string() : " to " + target.string()) +
                        ", expected a regular file or no file; lpurt never replaces links: give the target's path or "
                        "remove the link",
                    ExitCode::io);
  }
  if (!S_ISREG(st.st_mode))
    throw FileError(path + ": is " + kind_of(st.st_mode) +
                        ", expected a regular file or no file; lpurt writes only regular files: choose another path",
                    ExitCode::io);
  if (!force) throw FileError(path + ": already exists; pass --force to replace it", ExitCode::io);
}


namespace {

std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "host";
  return name;
}

}  // namespace

void create_folder(const std::string& folder) {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec) throw FileError(folder + ": cannot create the folder: " + ec.message(), ExitCode::io);
}

void write_text_atomically(const std::string& path, const std::string& contents, bool force) {
  write_atomically(path, force, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    out << contents;
    out.flush();
    if (!out) throw FileError(tmp + ": cannot write (disk full?)");
  });
}

namespace {

/// Whether `name` is `<prefix><pid>` for a pid that no longer exists on this host.
bool names_dead_writer(const std::string& name, const std::string& prefix) {
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  const std::string pid_text = name.substr(prefix.size());
  if (pid_text.empty() || pid_text.size() > 9 || pid_text.find_first_not_of("0123456789") != std::string::npos)
    return false;
  return !process_alive(static_cast<pid_t>(std::stol(pid_text)));
}

}  // namespace

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

std::string this_host() { return host_name(); }

int64_t available_bytes(const std::string& folder) {
  struct statvfs st {};
  if (::statvfs(folder.c_str(), &st) != 0)
    throw FileError(folder + ": cannot read the free space of its file system: " + std::strerror(errno), ExitCode::io);
  return static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize);
}

void remove_stale_temporaries(const std::string& folder) {
  namespace fs = std::filesystem;
  const std::string marker = ".tmp." + host_name() + ".";
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const auto at = name.rfind(marker);
    if (at == std::string::npos) continue;
    std::error_code ignored;
    if (names_dead_writer(name, name.substr(0, at) + marker)) fs::remove(it->path(), ignored);
  }
}

void remove_stale_temporaries_of(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string prefix = target.filename().string() + ".tmp." + host_name() + ".";
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ignored;
    if (names_dead_writer(it->path().filename().string(), prefix) && fs::is_regular_file(it->symlink_status(ignored)))
      fs::remove(it->path(), ignored);
  }
}

AtomicFile::AtomicFile(std::string path, bool force)
    : path_(std::move(path)), temporary_path_(path_ + ".tmp." + host_name() + "." + std::to_string(::getpid())) {
  check_writable(path_, force);
  remove_stale_temporaries_of(path_);
}

AtomicFile::~AtomicFile() {
  if (!committed_) std::remove(temporary_path_.c_str());
}

void AtomicFile::commit() {
  check_writable(path_, true);  // something may have appeared at the path while the file was written
  std::error_code ec;
  std::filesystem::rename(temporary_path_, path_, ec);
  if (ec) throw FileError(path_ + ": cannot rename " + temporary_path_ + " into place: " + ec.message(), ExitCode::io);
  committed_ = true;
}

void write_atomically(const std::string& path, bool force, const std::function<void(const std::string&)>& write) {
  AtomicFile file(path, force);
  try {
    write(file.temporary_path());
  } catch (const Error& e) {
    throw FileError(path + ": cannot write: " + e.what(), ExitCode::io);
  }
  file.commit();
}

}  // namespace lpurt::io
