#pragma once
/// \file
/// One safetensors file (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian
/// header length N, N bytes of JSON header `{"name": {"dtype", "shape", "data_offsets": [begin, end]},
/// "__metadata__": {...}}`, then the tensors' bytes, offsets relative to the end of the header.
/// open_safetensors validates the whole header against the file before anything is read, with the
/// reference implementation's rules: a header no larger than the file (and at most 100 MB), every
/// tensor's byte count equal to its shape times its dtype's size, and the tensors covering the data
/// exactly (no overlap, no hole, nothing past the end, nothing after the last tensor). Data is then
/// read with pread, a row block at a time: nothing is mapped, so memory holds what the caller asks for.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lpurt::io::detail {

/// Element types lpurt converts (the others are named in errors by their safetensors spelling).
enum class TensorDtype { f32, f16, bf16, other };

struct SafetensorsTensor {
  std::string dtype_name;     ///< as in the header: "F32", "BF16", ...
  TensorDtype dtype = TensorDtype::other;
  int64_t element_bytes = 0;  ///< size of one element of dtype_name
  std::vector<int64_t> shape;
  int64_t data_begin = 0;     ///< absolute file offset of the first byte
  int64_t data_bytes = 0;

  int64_t n_elements() const;
};

/// An open file descriptor (closed on destruction).
class FileDescriptor {
 public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(FileDescriptor&& o) noexcept : fd_(o.release()) {}
  FileDescriptor& operator=(FileDescriptor&& o) noexcept;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor();
  int get() const { return fd_; }

 private:
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  int fd_ = -1;
};

struct SafetensorsFile {
  std::string path;
  FileDescriptor fd;
  int64_t file_bytes = 0;
  std::map<std::string, SafetensorsTensor> tensors;  ///< by name, sorted (errors come in a stable order)
};

/// Opens `path` and validates its header (see the file comment). Throws FileError naming the file and,
/// where one is at fault, the tensor.
SafetensorsFile open_safetensors(const std::string& path);

/// Reads exactly `n_bytes` at `offset` of `file` into dst; throws FileError naming the file if it
/// cannot (an I/O error, or a file truncated since it was opened).
void read_exactly(const SafetensorsFile& file, int64_t offset, int64_t n_bytes, void* dst);

/// Converts n elements of dtype (f32, f16 or bf16, little-endian) to float32. Returns the index of the
/// first value that is not finite, or -1.
int64_t convert_to_float(TensorDtype dtype, const void* src, int64_t n, float* dst);

const char* dtype_short_name(TensorDtype dtype);

}  // namespace lpurt::io::detail
