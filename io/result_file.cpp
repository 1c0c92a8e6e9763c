#include "io/result_file.hpp"

#include <nlohmann/json.hpp>

#include "io/atomic_file.hpp"
#include "io/detail/h5.hpp"
#include "io/error.hpp"

namespace lpurt::io {

using detail::check;
using detail::Handle;
using detail::write_dataset;
using detail::write_scalar_attribute;

ResultWriter::ResultWriter(const std::string& path, bool force, int64_t batch, int64_t n_tokens, int64_t vocab_size)
    : file_(path, force), batch_(batch), n_tokens_(n_tokens), vocab_size_(vocab_size) {
  try {
    h5_ = detail::create_file(file_.temporary_path());
    std::vector<hsize_t> dims = {static_cast<hsize_t>(n_tokens), static_cast<hsize_t>(vocab_size)};
    if (batch > 1) dims.insert(dims.begin(), static_cast<hsize_t>(batch));
    Handle space(check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), "H5Screate_simple"), H5Sclose);
    logits_ = Handle(check(H5Dcreate2(h5_.get(), "logits", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                           "cannot create dataset logits"),
                     H5Dclose);
  } catch (const Error& e) {
    throw FileError(path + ": cannot write: " + e.what(), ExitCode::io);
  }
}

void ResultWriter::write_logits(int64_t sequence, int64_t token, const float* row) {
  LPURT_ASSERT(sequence >= 0 && sequence < batch_ && token >= 0 && token < n_tokens_);
  try {
    std::vector<hsize_t> start = {static_cast<hsize_t>(token), 0}, count = {1, static_cast<hsize_t>(vocab_size_)};
    if (batch_ > 1) {
      start.insert(start.begin(), static_cast<hsize_t>(sequence));
      count.insert(count.begin(), 1);
    }
    Handle file_space(check(H5Dget_space(logits_.get()), "H5Dget_space"), H5Sclose);
    check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
          "H5Sselect_hyperslab");
    const hsize_t row_elems = static_cast<hsize_t>(vocab_size_);
    Handle row_space(check(H5Screate_simple(1, &row_elems, nullptr), "H5Screate_simple"), H5Sclose);
    check(H5Dwrite(logits_.get(), H5T_NATIVE_FLOAT, row_space.get(), file_space.get(), H5P_DEFAULT, row),
          "cannot write the logits of sequence " + std::to_string(sequence) + ", token " + std::to_string(token));
  } catch (const Error& e) {
    throw FileError(file_.path() + ": cannot write: " + e.what(), ExitCode::io);
  }
}

void ResultWriter::commit(const RunResult& r) {
  const auto b = static_cast<hsize_t>(r.batch);
  LPURT_ASSERT(r.batch == batch_ && r.tokens.size() == b * static_cast<hsize_t>(n_tokens_));
  LPURT_ASSERT(r.texts.empty() || r.texts.size() == b);
  try {
    const hid_t f = h5_.get();
    const std::string& tmp = file_.temporary_path();
    // SPEC shapes for one sequence ([K], [P]); a batch adds a leading [B].
    const hsize_t k = static_cast<hsize_t>(n_tokens_), p = r.prompt.size() / b;
    auto dims = [&](std::vector<hsize_t> d) {
      if (b > 1) d.insert(d.begin(), b);
      return d;
    };
    write_dataset(f, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, dims({k}), r.tokens.data());
    write_dataset(f, "prompt", H5T_STD_I32LE, H5T_NATIVE_INT32, dims({p}), r.prompt.data());
    if (!r.texts.empty()) {
      // Variable-length UTF-8, the layout h5py reads back as str; a scalar for one sequence, as /tokens is [K].
      std::vector<const char*> texts;
      for (const auto& t : r.texts) texts.push_back(t.c_str());
      const Handle type = detail::utf8_string_type();
      write_dataset(f, "text", type.get(), type.get(), dims({}), texts.data());
    }
    {
      Handle root = detail::open_group(f, "/", tmp);
      for (const auto& [key, value] : r.summary.fields()) write_scalar_attribute(root.get(), key, value);
      Handle metrics = detail::create_group(f, "metrics", tmp);
      for (const auto& m : r.metrics) {
        write_dataset(metrics.get(), m.name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, {m.values.size()}, m.values.data());
        Handle ds(check(H5Dopen2(metrics.get(), m.name.c_str(), H5P_DEFAULT), "H5Dopen2"), H5Dclose);
        write_scalar_attribute(ds.get(), "unit", Record::Value(m.unit));
      }
    }
    // Every object closed, so closing the file writes it out; a failure here is a failed write.
    check(logits_.close(), tmp + ": cannot close /logits");
    check(h5_.close(), tmp + ": cannot close the file");
  } catch (const Error& e) {
    throw FileError(file_.path() + ": cannot write: " + e.what(), ExitCode::io);
  }
  file_.commit();
}

std::string run_json(const RunResult& result) {
  // As Record::to_json (fields in order, NaN and infinities as null), plus the one field that is not a scalar.
  nlohmann::ordered_json object = nlohmann::ordered_json::object();
  for (const auto& field : result.summary.fields())
    std::visit([&](const auto& v) { object[field.first] = v; }, field.second);
  if (result.texts.size() == 1)
    object["text"] = result.texts.front();
  else if (!result.texts.empty())
    object["text"] = result.texts;
  return object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
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
