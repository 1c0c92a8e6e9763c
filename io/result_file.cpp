#include "io/result_file.hpp"

#include "io/atomic_file.hpp"
#include "io/detail/h5.hpp"
#include "io/error.hpp"

namespace lpurt::io {

using detail::check;
using detail::Handle;
using detail::write_dataset;
using detail::write_scalar_attribute;

namespace {

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

Record read_result_summary(const std::string& path) {
  Handle file = detail::open_file_read(path);
  Handle root = detail::open_group(file.get(), "/", path);
  struct Visit {
    Record record;
    std::string path;
  } visit{{}, path};
  auto read_one = [](hid_t loc, const char* name, const H5A_info_t*, void* data) -> herr_t {
    auto& v = *static_cast<Visit*>(data);
    Handle attr(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
    Handle type(H5Aget_type(attr.get()), H5Tclose);
    Handle space(H5Aget_space(attr.get()), H5Sclose);
    if (attr.get() < 0 || type.get() < 0 || space.get() < 0 || H5Sget_simple_extent_npoints(space.get()) != 1) return -1;
    const H5T_class_t cls = H5Tget_class(type.get());
    if (cls == H5T_INTEGER) {
      int64_t x = 0;
      if (H5Aread(attr.get(), H5T_NATIVE_INT64, &x) < 0) return -1;
      v.record.set(name, x);
    } else if (cls == H5T_FLOAT) {
      double x = 0;
      if (H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &x) < 0) return -1;
      v.record.set(name, x);
    } else if (cls == H5T_STRING && H5Tis_variable_str(type.get()) > 0) {
      char* text = nullptr;
      if (H5Aread(attr.get(), type.get(), &text) < 0) return -1;
      v.record.set(name, std::string(text ? text : ""));
      H5free_memory(text);
    } else {
      return -1;  // lpurt writes scalars and variable-length strings only
    }
    return 0;
  };
  hsize_t next = 0;
  check(H5Aiterate2(root.get(), H5_INDEX_CRT_ORDER, H5_ITER_INC, &next, read_one, &visit),
        path + ": cannot read the summary attributes of a result file");
  return visit.record;
}

}  // namespace lpurt::io
