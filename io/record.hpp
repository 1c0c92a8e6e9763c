#pragma once
/// \file
/// An ordered set of named scalar fields (a run's summary, a sweep point): printed as one JSON object and
/// stored as HDF5 attributes, in the same order, with the same names.

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace lpurt::io {

class Record {
 public:
  using Value = std::variant<int64_t, double, std::string>;
  Record& set(const std::string& key, Value value);
  const std::vector<std::pair<std::string, Value>>& fields() const { return fields_; }
  const Value* find(const std::string& key) const;
  /// One compact JSON object on one line, fields in order; doubles round-trip exactly; invalid UTF-8 in
  /// keys or strings becomes U+FFFD.
  std::string to_json() const;

 private:
  std::vector<std::pair<std::string, Value>> fields_;
};

}  // namespace lpurt::io
