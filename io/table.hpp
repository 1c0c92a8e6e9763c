#pragma once
/// \file
/// A study's table: one row per point, one column per field, with units. Written as HDF5 (group /table,
/// one dataset per column with a `unit` attribute, `columns` on the root giving their order) and as CSV
/// (one header line of column names; a missing value is an empty cell). Both through atomic renames.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/record.hpp"

namespace lpurt::io {

struct TableColumn {
  enum class Kind { integer, real, text };
  std::string name;
  std::string unit;  ///< "s", "bytes", "tokens/s", ... ("" for counts, names and text)
  Kind kind = Kind::integer;
  std::vector<int64_t> integers;   ///< [rows] Kind::integer (a column is integer only if no row lacks it)
  std::vector<double> reals;       ///< [rows] Kind::real; NaN where a row lacks the field
  std::vector<std::string> texts;  ///< [rows] Kind::text; "" where a row lacks the field
};

/// The unit a field's name implies by lpurt's naming rules (`_s` seconds, `_bytes`, `_cycles`,
/// `tokens_per_s` tokens/s, `_hops`, `_hz`, `bytes_per_s` bytes/s); "" otherwise.
std::string unit_of_field(const std::string& name);

/// Columns for `rows`: the union of their fields in first-seen order; `unit(name)` names each unit.
std::vector<TableColumn> make_columns(const std::vector<Record>& rows,
                                      const std::function<std::string(const std::string&)>& unit = unit_of_field);

/// HDF5 table with `attributes` on the root (format = "lpurt-study-table" is added).
void write_table_hdf5(const std::string& path, const std::vector<TableColumn>& columns, const Record& attributes);
/// CSV through an atomic rename; an existing file is replaced only with `force` (check_writable's rule).
void write_table_csv(const std::string& path, const std::vector<TableColumn>& columns, bool force = true);

}  // namespace lpurt::io
