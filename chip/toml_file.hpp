#pragma once
/// \file
/// The TOML of job files and system files, read with toml++ into tables whose every value knows its
/// line. Errors are one line, "<source>:<line>:<column>: <what toml++ expected>", and carry
/// ExitCode::input. toml++ keeps tables sorted by key; entries_in_file_order recovers the order a user
/// wrote (a sweep's axes are nested loops in that order).
///
/// Example usage:
/// \code
///   const toml::table root = lpurt::chip::parse_toml(text, "job.toml");
///   for (const auto& entry : lpurt::chip::flatten_in_file_order(root))
///     std::printf("%s at %s\n", entry.name.c_str(), lpurt::chip::toml_origin(*entry.value, "job.toml").c_str());
/// \endcode

#include <functional>
#include <string>
#include <vector>

#include <toml++/toml.h>

namespace lpurt::chip {

/// Dotted keys and table headers of more parts than this are refused before toml++ sees them: toml++ 3.3
/// recurses once per part, and some 40,000 parts overflow an 8 MiB stack.
constexpr int max_toml_key_parts = 64;

/// Parses `text` (the contents of `source`, used in messages). Throws InputError naming the line and
/// column for a syntax error, a duplicate key, a table defined twice, an integer out of int64 range, or a
/// key of more than max_toml_key_parts parts. A UTF-8 byte order mark at the start is skipped.
toml::table parse_toml(const std::string& text, const std::string& source);

/// "job.toml:12", the line where `node` starts; just `source` if toml++ recorded no position (a table
/// that only a longer header implies).
std::string toml_origin(const toml::node& node, const std::string& source);

/// "string", "integer", "float", "boolean", "array", "table", "date", "time" or "date-time".
std::string toml_type_name(const toml::node& node);

/// One value of a table, named by its key or by its dotted path below the table; `value` points into
/// the table, which must outlive it.
struct TomlEntry {
  std::string name;
  const toml::node* value;
};

/// The entries of `table` in the order the file gives them.
std::vector<TomlEntry> entries_in_file_order(const toml::table& table);

/// The values below `table` with nested tables flattened into dotted names, in file order: TOML reads
/// `chip_speed_factor.3 = 0.5` as a table `chip_speed_factor` holding `3`, and this gives it back as
/// "chip_speed_factor.3". A table whose dotted name `keep_whole` accepts is one entry (a sweep range).
std::vector<TomlEntry> flatten_in_file_order(const toml::table& table,
                                             const std::function<bool(const std::string&)>& keep_whole = {});

}  // namespace lpurt::chip
