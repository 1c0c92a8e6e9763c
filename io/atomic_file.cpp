#include "io/atomic_file.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <utility>

#include "io/error.hpp"

namespace lpurt::io {

void check_writable(const std::string& path, bool force) {
  if (!force && std::filesystem::exists(path))
    throw FileError(path + ": already exists; pass --force to replace it", ExitCode::io);
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

void remove_stale_temporaries(const std::string& folder) {
  namespace fs = std::filesystem;
  const std::string marker = ".tmp." + host_name() + ".";
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const auto at = name.rfind(marker);
    if (at == std::string::npos) continue;
    const std::string pid_text = name.substr(at + marker.size());
    if (pid_text.empty() || pid_text.size() > 9 || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::stol(pid_text));
    std::error_code ignored;
    if (::kill(pid, 0) != 0 && errno == ESRCH) fs::remove(it->path(), ignored);
  }
}

AtomicFile::AtomicFile(std::string path, bool force)
    : path_(std::move(path)), temporary_path_(path_ + ".tmp." + host_name() + "." + std::to_string(::getpid())) {
  check_writable(path_, force);
}

AtomicFile::~AtomicFile() {
  if (!committed_) std::remove(temporary_path_.c_str());
}

void AtomicFile::commit() {
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
