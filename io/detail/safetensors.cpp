#include "io/detail/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <utility>

#include "io/error.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian and read as is");

namespace lpurt::io::detail {

namespace {

/// The reference implementation's limit: a larger header is refused before it is read.
constexpr int64_t max_header_bytes = 100'000'000;
/// Bounds that keep every size computed from a header within int64 (2^50 bytes: a petabyte).
constexpr int64_t max_tensor_elements = int64_t{1} << 50;

struct DtypeInfo {
  const char* name;
  int64_t bytes;
  TensorDtype dtype;
};

/// Every dtype of the safetensors format with a whole-byte size; sub-byte ones (F4, F6_*) are refused
/// as unknown, like any name not listed.
constexpr std::array<DtypeInfo, 16> dtypes = {{{"F32", 4, TensorDtype::f32},
                                               {"F16", 2, TensorDtype::f16},
                                               {"BF16", 2, TensorDtype::bf16},
                                               {"F64", 8, TensorDtype::other},
                                               {"I64", 8, TensorDtype::other},
                                               {"U64", 8, TensorDtype::other},
                                               {"I32", 4, TensorDtype::other},
                                               {"U32", 4, TensorDtype::other},
                                               {"I16", 2, TensorDtype::other},
                                               {"U16", 2, TensorDtype::other},
                                               {"I8", 1, TensorDtype::other},
                                               {"U8", 1, TensorDtype::other},
                                               {"BOOL", 1, TensorDtype::other},
                                               {"F8_E4M3", 1, TensorDtype::other},
                                               {"F8_E5M2", 1, TensorDtype::other},
                                               {"F8_E8M0", 1, TensorDtype::other}}};

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw FileError(path + ": " + what); }

std::string errno_text() { return std::strerror(errno); }

/// A JSON value for a message: short, one line.
std::string shown(const nlohmann::json& value) {
  std::string text = value.dump();
  return text.size() > 60 ? text.substr(0, 57) + "..." : text;
}

int64_t non_negative_integer(const nlohmann::json& value, const std::string& path, const std::string& what) {
  if (value.is_number_unsigned() && value.get<uint64_t>() <= static_cast<uint64_t>(max_tensor_elements))
    return static_cast<int64_t>(value.get<uint64_t>());
  if (value.is_number_integer() && value.get<int64_t>() >= 0 && value.get<int64_t>() <= max_tensor_elements)
    return value.get<int64_t>();
  fail(path, what + " is " + shown(value) + ", expected an integer 0 .. 2^50");
}

SafetensorsTensor parse_tensor(const std::string& name, const nlohmann::json& entry, int64_t data_start,
                               const std::string& path) {
  const std::string where = "header entry of tensor " + name;
  if (!entry.is_object()) fail(path, where + " is " + shown(entry) + ", expected an object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!entry.contains(key)) fail(path, where + " has no \"" + key + "\"");
  for (const auto& item : entry.items())
    if (item.key() != "dtype" && item.key() != "shape" && item.key() != "data_offsets")
      fail(path, where + " has an unknown key \"" + item.key() + "\"");
  SafetensorsTensor t;
  if (!entry["dtype"].is_string()) fail(path, where + ": dtype is " + shown(entry["dtype"]) + ", expected a string");
  t.dtype_name = entry["dtype"].get<std::string>();
  const auto info = std::find_if(dtypes.begin(), dtypes.end(), [&](const DtypeInfo& d) { return t.dtype_name == d.name; });
  if (info == dtypes.end())
    fail(path, "tensor " + name + " has dtype \"" + t.dtype_name + "\", which lpurt cannot read (expected F32, F16 or BF16)");
  t.dtype = info->dtype;
  t.element_bytes = info->bytes;
  const nlohmann::json& shape = entry["shape"];
  if (!shape.is_array()) fail(path, where + ": shape is " + shown(shape) + ", expected an array");
  int64_t n = 1;
  for (const auto& dim : shape) {
    const int64_t d = non_negative_integer(dim, path, "a dimension of tensor " + name);
    t.shape.push_back(d);
    if (d != 0 && n > max_tensor_elements / d) fail(path, "tensor " + name + " has more than 2^50 elements");
    n *= d;
  }
  const nlohmann::json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    fail(path, where + ": data_offsets is " + shown(offsets) + ", expected [begin, end]");
  const int64_t begin = non_negative_integer(offsets[0], path, "data_offsets[0] of tensor " + name);
  const int64_t end = non_negative_integer(offsets[1], path, "data_offsets[1] of tensor " + name);
  if (end < begin) fail(path, "tensor " + name + " has data_offsets [" + std::to_string(begin) + ", " +
                                  std::to_string(end) + "]: the end is before the beginning");
  if (end - begin != n * t.element_bytes)
    fail(path, "tensor " + name + " has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] (" +
                   std::to_string(end - begin) + " bytes) but its shape and dtype " + t.dtype_name + " need " +
                   std::to_string(n * t.element_bytes) + " bytes");
  t.data_begin = data_start + begin;
  t.data_bytes = end - begin;
  return t;
}

/// The float value of every f16 bit pattern (exact: f16 is a subset of f32), built once.
const std::array<float, 65536>& f16_table() {
  static const std::array<float, 65536> table = [] {
    std::array<float, 65536> t{};
    for (uint32_t h = 0; h < 65536; ++h) {
      const uint32_t sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
      uint32_t bits;
      if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);  // infinity or NaN
      } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);  // rebias 15 -> 127
      } else if (mantissa == 0) {
        bits = sign;
      } else {  // subnormal: mantissa x 2^-24, normal in f32
        uint32_t m = mantissa, e = 113;
        while ((m & 0x400u) == 0) m <<= 1, --e;
        bits = sign | (e << 23) | ((m & 0x3ffu) << 13);
      }
      std::memcpy(&t[h], &bits, sizeof bits);
    }
    return t;
  }();
  return table;
}

}  // namespace

int64_t SafetensorsTensor::n_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

FileDescriptor& FileDescriptor::operator=(FileDescriptor&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

FileDescriptor::~FileDescriptor() {
  if (fd_ >= 0) ::close(fd_);
}

SafetensorsFile open_safetensors(const std::string& path) {
  SafetensorsFile f;
  f.path = path;
  f.fd = FileDescriptor(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd.get() < 0) fail(path, "cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(f.fd.get(), &st) != 0) fail(path, "cannot stat: " + errno_text());
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  f.file_bytes = static_cast<int64_t>(st.st_size);
  if (f.file_bytes < 8) fail(path, "truncated: " + std::to_string(f.file_bytes) + " bytes, less than the 8-byte header length");
  uint64_t header_bytes = 0;
  read_exactly(f, 0, 8, &header_bytes);
  if (header_bytes > static_cast<uint64_t>(f.file_bytes - 8))
    fail(path, "header length " + std::to_string(header_bytes) + " runs past the end of the file (" +
                   std::to_string(f.file_bytes) + " bytes): truncated, or not a safetensors file");
  if (header_bytes > static_cast<uint64_t>(max_header_bytes))
    fail(path, "header length " + std::to_string(header_bytes) + " is more than the 100 MB safetensors allows");
  const auto n_header = static_cast<int64_t>(header_bytes);
  std::string text(static_cast<std::size_t>(n_header), '\0');
  read_exactly(f, 8, n_header, text.data());
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, "header is " + shown(header) + ", expected a JSON object");
  const int64_t data_start = 8 + n_header;
  for (const auto& item : header.items()) {
    if (item.key() == "__metadata__") continue;  // free-form strings (e.g. {"format": "pt"}); no numerics
    f.tensors.emplace(item.key(), parse_tensor(item.key(), item.value(), data_start, path));
  }
  // The data must be covered exactly, in any order of the entries: sorted by offset, each tensor starts
  // where the previous one ended, and the last ends at the end of the file.
  std::vector<std::pair<int64_t, const std::string*>> by_offset;  // ties in name order: stable messages
  for (const auto& [name, t] : f.tensors) by_offset.emplace_back(t.data_begin, &name);
  std::stable_sort(by_offset.begin(), by_offset.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  int64_t covered = data_start;
  const std::string* previous = nullptr;
  for (const auto& [begin, name] : by_offset) {
    const SafetensorsTensor& t = f.tensors.at(*name);
    if (begin < covered)
      fail(path, "tensor " + *name + " (bytes " + std::to_string(begin - data_start) + " .. " +
                     std::to_string(begin - data_start + t.data_bytes) + " of the data) overlaps tensor " +
                     (previous ? *previous : std::string("?")));
    if (begin > covered)
      fail(path, "bytes " + std::to_string(covered - data_start) + " .. " + std::to_string(begin - data_start) +
                     " of the data belong to no tensor (a hole before tensor " + *name + ")");
    if (t.data_bytes > f.file_bytes - begin)
      fail(path, "truncated: tensor " + *name + " ends at byte " + std::to_string(begin + t.data_bytes) +
                     " but the file has " + std::to_string(f.file_bytes) + " bytes");
    covered = begin + t.data_bytes;
    previous = name;
  }
  if (covered != f.file_bytes)
    fail(path, std::to_string(f.file_bytes - covered) + " bytes after the last tensor's data belong to no tensor");
  return f;
}

void read_exactly(const SafetensorsFile& file, int64_t offset, int64_t n_bytes, void* dst) {
  auto* out = static_cast<char*>(dst);
  while (n_bytes > 0) {
    const ssize_t got = ::pread(file.fd.get(), out, static_cast<std::size_t>(n_bytes), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(file.path, "cannot read " + std::to_string(n_bytes) + " bytes at offset " + std::to_string(offset) + ": " + errno_text());
    if (got == 0)
      fail(file.path, "truncated: no data at byte " + std::to_string(offset) + " (the file shrank after it was opened)");
    out += got, offset += got, n_bytes -= got;
  }
}

int64_t convert_to_float(TensorDtype dtype, const void* src, int64_t n, float* dst) {
  const auto* bytes = static_cast<const unsigned char*>(src);
  switch (dtype) {
    case TensorDtype::f32:
      std::memcpy(dst, bytes, static_cast<std::size_t>(n) * 4);
      break;
    case TensorDtype::bf16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        const uint32_t bits = static_cast<uint32_t>(h) << 16;  // bf16 is the top half of an f32
        std::memcpy(&dst[i], &bits, 4);
      }
      break;
    case TensorDtype::f16: {
      const auto& table = f16_table();
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = table[h];
      }
      break;
    }
    case TensorDtype::other:
      LPURT_ASSERT(false);  // never converted: HfCheckpoint refuses such tensors when it opens them
  }
  // A separate pass: it vectorizes, and the conversion loops above stay branch-free.
  bool all_finite = true;
  for (int64_t i = 0; i < n; ++i) all_finite &= std::isfinite(dst[i]);
  if (all_finite) return -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(dst[i])) return i;
  return -1;
}

const char* dtype_short_name(TensorDtype dtype) {
  switch (dtype) {
    case TensorDtype::f32: return "f32";
    case TensorDtype::f16: return "f16";
    case TensorDtype::bf16: return "bf16";
    case TensorDtype::other: return "other";
  }
  return "other";
}

}  // namespace lpurt::io::detail
