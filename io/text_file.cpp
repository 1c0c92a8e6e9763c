#include "io/text_file.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/error.hpp"

namespace lpurt::io {

std::string read_text_file(const std::string& path, const std::string& what, int64_t max_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    throw FileError(what + " " + path + ": cannot be read: " + ec.message());
  if (!fs::exists(status)) throw FileError(what + " " + path + ": no such file");
  if (!fs::is_regular_file(status)) throw FileError(what + " " + path + ": not a regular file");
  const auto size = fs::file_size(path, ec);
  if (ec) throw FileError(what + " " + path + ": cannot read its size");
  if (size > static_cast<std::uintmax_t>(max_bytes))
    throw FileError(what + " " + path + ": " + std::to_string(size) + " bytes, more than the " +
                    std::to_string(max_bytes) + " a " + what + " may have");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(what + " " + path + ": cannot be read: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace lpurt::io
