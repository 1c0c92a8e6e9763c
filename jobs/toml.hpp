#pragma once
/// \file
/// The TOML subset that job files use, parsed with the line of every key and value so that errors can
/// name both. Supported: comments, `[table]` and `[a.b]` headers, bare, quoted and dotted keys, basic
/// ("...", with escapes) and literal ('...') strings, decimal integers (with `_` separators), floats
/// (with exponent, `inf`, `nan`), booleans, arrays (over several lines, trailing comma allowed) and
/// inline tables. Not supported, each with an error saying so: multi-line strings, arrays of tables
/// (`[[x]]`), hexadecimal/octal/binary integers, dates and times. As in TOML 1.0, an inline table ends on
/// the line where it starts (an array inside it may still span lines); invalid UTF-8 inside strings is
/// passed through unchanged.
/// A small own parser rather than a new dependency: SPEC fixes the dependency set, and this subset is
/// about 400 lines that the job-file fuzzer covers.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "chip/error.hpp"

namespace lpurt::jobs::toml {

/// A malformed job file: the message starts with "<source>:<line>: ".
class ParseError : public Error {
 public:
  explicit ParseError(const std::string& message) : Error(message, ExitCode::config) {}
};

struct Value;
/// Keys in the order they appear in the file (a sweep's axes keep their order).
using Table = std::vector<std::pair<std::string, Value>>;

struct Value {
  enum class Type { string, integer, floating, boolean, array, table };
  Type type = Type::table;
  int line = 0;                 ///< 1-based line where the value starts (a table: its header or first key)
  std::string string_value;     ///< Type::string
  int64_t integer_value = 0;    ///< Type::integer
  double float_value = 0;       ///< Type::floating
  bool bool_value = false;      ///< Type::boolean
  std::vector<Value> array;     ///< Type::array (elements may differ in type; the job schema checks)
  Table table;                  ///< Type::table

  /// "string", "integer", "float", "boolean", "array", "table".
  const char* type_name() const;
  /// The entry named `key` of a table, or nullptr.
  const Value* find(const std::string& key) const;
};

/// Parses `text` (the contents of `source_name`, used in messages) into its root table. Throws
/// ParseError naming the line for a syntax error, a duplicate key, a key redefined as a table (or a
/// table header repeated), an integer out of int64 range, a value nested more than 64 levels deep
/// (tables, arrays and inline tables together), or an unsupported construct. Never reads past `text`; the
/// depth limit keeps every recursion over the result, here or in its users, far from the stack limit.
Value parse(const std::string& text, const std::string& source_name);

}  // namespace lpurt::jobs::toml
