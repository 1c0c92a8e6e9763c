#include "io/atomic_file.hpp"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "io/error.hpp"

namespace lpurt::io {

void check_writable(const std::string& path, bool force) {
  if (!force && std::filesystem::exists(path))
    throw FileError(path + ": already exists; pass --force to replace it", ExitCode::io);
}

void write_atomically(const std::string& path, bool force, const std::function<void(const std::string&)>& write) {
  check_writable(path, force);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    write(tmp);
  } catch (const Error& e) {
    std::remove(tmp.c_str());
    throw FileError(path + ": cannot write: " + e.what(), ExitCode::io);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw FileError(path + ": cannot rename " + tmp + " into place: " + ec.message(), ExitCode::io);
  }
}

}  // namespace lpurt::io
