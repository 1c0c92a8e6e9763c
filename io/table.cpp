#include "io/table.hpp"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <optional>

#include "io/atomic_file.hpp"
#include "io/detail/h5.hpp"
#include "io/error.hpp"

namespace lpurt::io {

using detail::check;
using detail::Handle;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string csv_cell(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (const char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

}  // namespace

std::string unit_of_field(const std::string& name) {
  if (name.find("tokens_per_s") != std::string::npos) return "tokens/s";
  if (ends_with(name, "bytes_per_s")) return "bytes/s";
  if (ends_with(name, "_ns")) return "ns";
  if (ends_with(name, "_s") || ends_with(name, "_s_rank0")) return "s";
  if (ends_with(name, "_bytes") || name.find("_bytes_") != std::string::npos) return "bytes";
  if (ends_with(name, "_cycles")) return "cycles";
  if (ends_with(name, "_hops")) return "hops";
  if (ends_with(name, "_hz")) return "Hz";
  return "";
}

std::vector<TableColumn> make_columns(const std::vector<Record>& rows,
                                      const std::function<std::string(const std::string&)>& unit) {
  std::vector<std::string> names;
  std::map<std::string, std::size_t> index;
  for (const auto& row : rows)
    for (const auto& [name, value] : row.fields())
      if (index.emplace(name, names.size()).second) names.push_back(name);

  std::vector<TableColumn> columns;
  for (const auto& name : names) {
    TableColumn c;
    c.name = name;
    c.unit = unit(name);
    bool any_text = false, any_real = false, any_missing = false;
    for (const auto& row : rows) {
      const Record::Value* v = row.find(name);
      any_missing = any_missing || !v;
      any_text = any_text || (v && std::holds_alternative<std::string>(*v));
      any_real = any_real || (v && std::holds_alternative<double>(*v));
    }
    c.kind = any_text ? TableColumn::Kind::text
                      : (any_real || any_missing ? TableColumn::Kind::real : TableColumn::Kind::integer);
    for (const auto& row : rows) {
      const Record::Value* v = row.find(name);
      if (c.kind == TableColumn::Kind::integer) {
        c.integers.push_back(std::get<int64_t>(*v));
      } else if (c.kind == TableColumn::Kind::real) {
        double x = std::numeric_limits<double>::quiet_NaN();
        if (v) x = std::holds_alternative<int64_t>(*v) ? static_cast<double>(std::get<int64_t>(*v)) : std::get<double>(*v);
        c.reals.push_back(x);
      } else {
        std::string text;
        if (const auto* s = v ? std::get_if<std::string>(v) : nullptr) text = *s;
        else if (const auto* i = v ? std::get_if<int64_t>(v) : nullptr) text = std::to_string(*i);
        else if (const auto* d = v ? std::get_if<double>(v) : nullptr) text = std::to_string(*d);
        c.texts.push_back(text);
      }
    }
    columns.push_back(std::move(c));
  }
  return columns;
}

void write_table_hdf5(const std::string& path, const std::vector<TableColumn>& columns, const Record& attributes) {
  write_atomically(path, true, [&](const std::string& tmp) {
    Handle file = detail::create_file(tmp);
    Handle root = detail::open_group(file.get(), "/", tmp);
    detail::write_scalar_attribute(root.get(), "format", std::string("lpurt-study-table"));
    for (const auto& [key, value] : attributes.fields()) detail::write_scalar_attribute(root.get(), key, value);
    std::string order;
    for (const auto& c : columns) order += (order.empty() ? "" : ",") + c.name;
    detail::write_scalar_attribute(root.get(), "columns", order);
    Handle table = detail::create_group(file.get(), "table", tmp);
    for (const auto& c : columns) {
      if (c.kind == TableColumn::Kind::integer) {
        detail::write_dataset(table.get(), c.name, H5T_STD_I64LE, H5T_NATIVE_INT64, {c.integers.size()}, c.integers.data());
      } else if (c.kind == TableColumn::Kind::real) {
        detail::write_dataset(table.get(), c.name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, {c.reals.size()}, c.reals.data());
      } else {
        const Handle type = detail::utf8_string_type();
        std::vector<const char*> texts;
        for (const auto& t : c.texts) texts.push_back(t.c_str());
        detail::write_dataset(table.get(), c.name, type.get(), type.get(), {texts.size()}, texts.data());
      }
      Handle ds(check(H5Dopen2(table.get(), c.name.c_str(), H5P_DEFAULT), tmp + ": cannot open " + c.name), H5Dclose);
      detail::write_scalar_attribute(ds.get(), "unit", c.unit);
      check(ds.close(), tmp + ": cannot close " + c.name);
    }
    check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), tmp + ": cannot flush");
    // Closed children first: the file closes (and writes its last metadata) only once nothing in it is open,
    // and a failure there must stop the rename into place.
    check(table.close(), tmp + ": cannot close /table");
    check(root.close(), tmp + ": cannot close /");
    check(file.close(), tmp + ": cannot close the file (its last writes failed)");
  });
}

void write_table_csv(const std::string& path, const std::vector<TableColumn>& columns, bool force) {
  write_atomically(path, force, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw FileError(tmp + ": cannot create");
    const std::size_t rows = columns.empty() ? 0
                             : columns[0].kind == TableColumn::Kind::integer ? columns[0].integers.size()
                             : columns[0].kind == TableColumn::Kind::real    ? columns[0].reals.size()
                                                                             : columns[0].texts.size();
    for (std::size_t c = 0; c < columns.size(); ++c) out << (c ? "," : "") << csv_cell(columns[c].name);
    out << "\n";
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t c = 0; c < columns.size(); ++c) {
        const TableColumn& col = columns[c];
        if (c) out << ",";
        if (col.kind == TableColumn::Kind::integer) {
          out << col.integers[r];
        } else if (col.kind == TableColumn::Kind::real) {
          if (std::isnan(col.reals[r])) continue;  // missing: an empty cell (pandas reads NaN)
          char buf[32];
          std::snprintf(buf, sizeof buf, "%.17g", col.reals[r]);
          out << buf;
        } else {
          out << csv_cell(col.texts[r]);
        }
      }
      out << "\n";
    }
    out.flush();
    if (!out) throw FileError(tmp + ": write failed (disk full?)");
  });
}

}  // namespace lpurt::io
