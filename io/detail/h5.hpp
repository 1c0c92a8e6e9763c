#pragma once
/// \file
/// Thin RAII wrappers over the HDF5 C API (HighFive is not packaged on Debian 12). Every call that can
/// fail goes through check(), which throws io::FileError with the caller's context and the HDF5 error
/// stack folded into one line.

#include <hdf5.h>

#include <string>
#include <utility>
#include <vector>

#include "io/record.hpp"

namespace lpurt::io::detail {

/// Owns one hid_t and closes it with the matching H5*close.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*closer)(hid_t)) : id_(id), close_(closer) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      close_ = o.close_;
    }
    return *this;
  }
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  void reset() { close(); }
  /// Closes now and returns the close call's status (negative: it failed, e.g. a file's last write).
  herr_t close() {
    const herr_t status = id_ >= 0 && close_ ? close_(id_) : 0;
    id_ = H5I_INVALID_HID;
    return status;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  herr_t (*close_)(hid_t) = nullptr;
};

/// Silences HDF5's automatic error printing for the process (we report errors ourselves). Idempotent.
void silence_hdf5_errors();
/// The current HDF5 error stack as one line ("H5Fopen: unable to open file; ...").
std::string error_stack();
/// Throws FileError("<context>: <HDF5 stack>") when status < 0; returns status otherwise.
hid_t check(hid_t status, const std::string& context);

Handle open_file_read(const std::string& path);
Handle create_file(const std::string& path);
/// Opens an existing file for writing (to add to a file another writer has closed).
Handle open_file_read_write(const std::string& path);
Handle open_group(hid_t parent, const std::string& path, const std::string& file);
Handle create_group(hid_t parent, const std::string& path, const std::string& file);
Handle open_dataset(hid_t file, const std::string& path, const std::string& file_name);
bool link_exists(hid_t file, const std::string& path);
/// Throws FileError naming the link unless every link in the file is a hard link: a soft or external
/// link could lead lpurt to another object or another file (even /etc/passwd) than the one it checked.
void check_hard_links(hid_t file, const std::string& file_name);
bool attribute_exists(hid_t object, const std::string& name);

/// Element kinds lpurt stores.
enum class Dtype { int8, uint8, int32, float32, other };
Dtype dataset_dtype(hid_t dataset);
const char* dtype_name(Dtype d);
std::vector<hsize_t> dataset_dims(hid_t dataset);

/// A variable-length UTF-8 string type, the layout h5py writes by default, so Python reads it back as str.
Handle utf8_string_type();

/// A dataset of `dims` (any zero dimension: created empty) written from `data`.
void write_dataset(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type, const std::vector<hsize_t>& dims,
                   const void* data);
/// A scalar attribute: int64, float64 or a variable-length UTF-8 string.
void write_scalar_attribute(hid_t loc, const std::string& name, const Record::Value& value);

}  // namespace lpurt::io::detail
