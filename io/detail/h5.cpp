#include "io/detail/h5.hpp"

#include <cstdio>
#include <mutex>

#include "io/error.hpp"

namespace lpurt::io::detail {

void silence_hdf5_errors() {
  static std::once_flag once;
  std::call_once(once, [] {
    // No HDF5 teardown at exit: every file lpurt writes is flushed and closed explicitly before it is
    // renamed into place, and after a failed write (a full disk) HDF5 1.10 keeps the failed dataset's
    // object while its id is gone, so closing the library at exit crashes in H5F__close_cb. The
    // process's exit closes the descriptors; the temporary file is removed by its AtomicFile.
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  });
}

namespace {
herr_t collect_error(unsigned n, const H5E_error2_t* e, void* data) {
  auto* out = static_cast<std::string*>(data);
  // The innermost entries (highest n) are the most specific; keep them all, innermost last.
  if (!out->empty()) *out += "; ";
  std::string entry = std::string(e->func_name ? e->func_name : "?") + ": " + (e->desc ? e->desc : "?");
  for (char& c : entry)
    if (c == '\n' || c == '\r') c = ' ';
  *out += entry;
  (void)n;
  return 0;
}
}  // namespace

std::string error_stack() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_error, &text);
  H5Eclear2(H5E_DEFAULT);
  return text.empty() ? "no HDF5 error detail" : text;
}

hid_t check(hid_t status, const std::string& context) {
  if (status < 0) throw FileError(context + " (HDF5: " + error_stack() + ")");
  return status;
}

Handle open_file_read(const std::string& path) {
  silence_hdf5_errors();
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 <= 0) {
    H5Eclear2(H5E_DEFAULT);
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw FileError(path + ": cannot open (no such file or not readable)");
    std::fclose(f);
    throw FileError(path + ": not an HDF5 file (or truncated: no valid HDF5 superblock)");
  }
  return Handle(check(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path + ": cannot open HDF5 file"),
                H5Fclose);
}

Handle create_file(const std::string& path) {
  silence_hdf5_errors();
  // Root attributes and links keep the order they were written in (a summary reads back in its order).
  Handle fcpl(check(H5Pcreate(H5P_FILE_CREATE), "H5Pcreate"), H5Pclose);
  check(H5Pset_attr_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED), "attr order");
  check(H5Pset_link_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED), "link order");
  return Handle(check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), H5P_DEFAULT),
                      path + ": cannot create HDF5 file"),
                H5Fclose);
}

Handle open_file_read_write(const std::string& path) {
  silence_hdf5_errors();
  return Handle(check(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), path + ": cannot open HDF5 file for writing"),
                H5Fclose);
}

Handle open_group(hid_t parent, const std::string& path, const std::string& file) {
  return Handle(check(H5Gopen2(parent, path.c_str(), H5P_DEFAULT), file + ": cannot open group " + path), H5Gclose);
}

Handle create_group(hid_t parent, const std::string& path, const std::string& file) {
  Handle lcpl(check(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"), H5Pclose);
  check(H5Pset_create_intermediate_group(lcpl.get(), 1), "H5Pset_create_intermediate_group");
  return Handle(check(H5Gcreate2(parent, path.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                      file + ": cannot create group " + path),
                H5Gclose);
}

Handle open_dataset(hid_t file, const std::string& path, const std::string& file_name) {
  if (!link_exists(file, path)) throw FileError(file_name + ": missing dataset " + path);
  return Handle(check(H5Dopen2(file, path.c_str(), H5P_DEFAULT), file_name + ": cannot open dataset " + path),
                H5Dclose);
}

bool link_exists(hid_t file, const std::string& path) {
  // H5Lexists must be asked one path component at a time: a missing parent group is an error, not "no".
  std::size_t pos = 0;
  while (true) {
    pos = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, pos);
    const htri_t exists = H5Lexists(file, prefix.c_str(), H5P_DEFAULT);
    if (exists <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (pos == std::string::npos) return true;
  }
}

namespace {
struct LinkVisit {
  std::string first_bad;  ///< the first non-hard link's name ("" if none)
  H5L_type_t type = H5L_TYPE_HARD;
};
herr_t visit_link(hid_t, const char* name, const H5L_info_t* info, void* data) {
  if (info->type == H5L_TYPE_HARD) return 0;
  auto* visit = static_cast<LinkVisit*>(data);
  visit->first_bad = name;
  visit->type = info->type;
  return 1;  // stop: one is enough to refuse the file
}
}  // namespace

void check_hard_links(hid_t file, const std::string& file_name) {
  // H5Lvisit reports soft and external links without following them.
  LinkVisit visit;
  check(H5Lvisit(file, H5_INDEX_NAME, H5_ITER_NATIVE, visit_link, &visit), file_name + ": cannot list the links");
  if (visit.first_bad.empty()) return;
  const char* kind = visit.type == H5L_TYPE_SOFT ? "a soft link" : visit.type == H5L_TYPE_EXTERNAL ? "an external link"
                                                                                                   : "a user-defined link";
  throw FileError(file_name + ": /" + visit.first_bad + " is " + kind +
                  "; a model file may hold only hard links (its own groups and datasets)");
}

bool attribute_exists(hid_t object, const std::string& name) {
  const htri_t exists = H5Aexists(object, name.c_str());
  if (exists < 0) H5Eclear2(H5E_DEFAULT);
  return exists > 0;
}

Dtype dataset_dtype(hid_t dataset) {
  Handle type(check(H5Dget_type(dataset), "H5Dget_type"), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  const std::size_t size = H5Tget_size(type.get());
  if (cls == H5T_INTEGER && size == 1 && H5Tget_sign(type.get()) == H5T_SGN_2) return Dtype::int8;
  if (cls == H5T_INTEGER && size == 1 && H5Tget_sign(type.get()) == H5T_SGN_NONE) return Dtype::uint8;
  if (cls == H5T_INTEGER && size == 4 && H5Tget_sign(type.get()) == H5T_SGN_2) return Dtype::int32;
  if (cls == H5T_FLOAT && size == 4) return Dtype::float32;
  return Dtype::other;
}

const char* dtype_name(Dtype d) {
  switch (d) {
    case Dtype::int8: return "int8";
    case Dtype::uint8: return "uint8";
    case Dtype::int32: return "int32";
    case Dtype::float32: return "float32";
    case Dtype::other: return "another type";
  }
  return "?";
}

std::vector<hsize_t> dataset_dims(hid_t dataset) {
  Handle space(check(H5Dget_space(dataset), "H5Dget_space"), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  check(rank, "H5Sget_simple_extent_ndims");
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  if (rank > 0) check(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), "H5Sget_simple_extent_dims");
  return dims;
}

void write_dataset(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type, const std::vector<hsize_t>& dims,
                   const void* data) {
  Handle space(check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), "H5Screate_simple"),
               H5Sclose);
  Handle ds(check(H5Dcreate2(loc, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                  "cannot create dataset " + name),
            H5Dclose);
  bool empty = false;
  for (hsize_t d : dims) empty = empty || d == 0;
  if (!empty) check(H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "cannot write dataset " + name);
  check(ds.close(), "cannot close dataset " + name + " after writing it");
}

Handle utf8_string_type() {
  Handle type(check(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
  check(H5Tset_size(type.get(), H5T_VARIABLE), "H5Tset_size");
  check(H5Tset_cset(type.get(), H5T_CSET_UTF8), "H5Tset_cset");
  return type;
}

void write_scalar_attribute(hid_t loc, const std::string& name, const Record::Value& value) {
  Handle space(check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  auto create = [&](hid_t type) {
    return Handle(check(H5Acreate2(loc, name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                        "cannot create attribute " + name),
                  H5Aclose);
  };
  if (const auto* n = std::get_if<int64_t>(&value)) {
    Handle a = create(H5T_STD_I64LE);
    check(H5Awrite(a.get(), H5T_NATIVE_INT64, n), "cannot write attribute " + name);
  } else if (const auto* d = std::get_if<double>(&value)) {
    Handle a = create(H5T_IEEE_F64LE);
    check(H5Awrite(a.get(), H5T_NATIVE_DOUBLE, d), "cannot write attribute " + name);
  } else {
    const Handle type = utf8_string_type();
    Handle a = create(type.get());
    const char* text = std::get<std::string>(value).c_str();
    check(H5Awrite(a.get(), type.get(), &text), "cannot write attribute " + name);
  }
}

}  // namespace lpurt::io::detail
