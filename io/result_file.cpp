#include "io/result_file.hpp"

#include "io/atomic_file.hpp"
#include "io/detail/h5.hpp"
#include "io/error.hpp"

namespace lpurt::io {

using detail::check;
using detail::Handle;

namespace {

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
    Handle type(check(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
    check(H5Tset_size(type.get(), H5T_VARIABLE), "H5Tset_size");
    check(H5Tset_cset(type.get(), H5T_CSET_UTF8), "H5Tset_cset");
    Handle a = create(type.get());
    const char* text = std::get<std::string>(value).c_str();
    check(H5Awrite(a.get(), type.get(), &text), "cannot write attribute " + name);
  }
}

void write_contents(const std::string& tmp, const RunResult& r) {
  Handle file = detail::create_file(tmp);
  const hid_t f = file.get();
  // SPEC shapes for one sequence ([K], [P], [K, V]); a batch adds a leading [B].
  const auto b = static_cast<hsize_t>(r.batch);
  const hsize_t k = r.tokens.size() / b, p = r.prompt.size() / b, v = static_cast<hsize_t>(r.vocab_size);
  auto dims = [&](std::vector<hsize_t> d) {
    if (b > 1) d.insert(d.begin(), b);
    return d;
  };
  write_dataset(f, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, dims({k}), r.tokens.data());
  write_dataset(f, "prompt", H5T_STD_I32LE, H5T_NATIVE_INT32, dims({p}), r.prompt.data());
  write_dataset(f, "logits", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, dims({k, v}), r.logits.data());
  Handle root = detail::open_group(f, "/", tmp);
  for (const auto& [key, value] : r.summary.fields()) write_scalar_attribute(root.get(), key, value);
  Handle metrics = detail::create_group(f, "metrics", tmp);
  for (const auto& m : r.metrics) {
    write_dataset(metrics.get(), m.name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, {m.values.size()}, m.values.data());
    Handle ds(check(H5Dopen2(metrics.get(), m.name.c_str(), H5P_DEFAULT), "H5Dopen2"), H5Dclose);
    write_scalar_attribute(ds.get(), "unit", Record::Value(m.unit));
  }
  check(H5Fflush(f, H5F_SCOPE_GLOBAL), tmp + ": cannot flush");
}

}  // namespace

void write_result_file(const std::string& path, const RunResult& result, bool force) {
  write_atomically(path, force, [&](const std::string& tmp) { write_contents(tmp, result); });
}

}  // namespace lpurt::io
