#include "chip/toml_file.hpp"

#include <algorithm>
#include <cstdio>
#include <string_view>

#include "chip/error.hpp"

namespace lpurt::chip {

namespace {

// Text echoed from toml++ into a message: printable ASCII as is, any other byte as \xNN, so that the
// message stays one readable line whatever the file holds.
std::string printable(std::string_view text) {
  std::string shown;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f) {
      shown += c;
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02X", static_cast<unsigned>(byte));
      shown += escaped;
    }
  }
  return shown;
}

// ` (in "...")`: the start of line `line` (1-based) of `text`, so that the message shows what the file
// says there; empty for an empty or missing line.
std::string quoted_line(const std::string& text, std::size_t line) {
  constexpr std::size_t max_shown_bytes = 60;
  std::size_t begin = 0;
  for (std::size_t n = 1; n < line && begin != std::string::npos; ++n) {
    begin = text.find('\n', begin);
    if (begin != std::string::npos) ++begin;
  }
  if (begin == std::string::npos || begin >= text.size()) return "";
  const std::size_t end = std::min(text.find_first_of("\r\n", begin), text.size());
  if (end == begin) return "";
  const std::string shown = printable(std::string_view(text).substr(begin, std::min(end - begin, max_shown_bytes)));
  return " (in \"" + shown + (end - begin > max_shown_bytes ? "...\")" : "\")");
}

[[noreturn]] void fail_at(const std::string& source, std::size_t line, std::size_t column, const std::string& what) {
  throw InputError(source + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + what);
}

bool is_key_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-' ||
         c == '+';
}

// Finds a run of more than max_toml_key_parts dot-joined words or strings outside strings and comments.
// A float has at most two such parts, so only a dotted key or table header can exceed the limit. Where
// this scan and toml++ could disagree about a string's end, the text is invalid and toml++ stops there.
class KeyDepthScan {
 public:
  KeyDepthScan(const std::string& text, const std::string& source) : text_(text), source_(source) {}

  void run() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '"' || c == '\'') {
        add_part();
        skip_string(c);
        in_word_ = false;
      } else if (is_key_char(c)) {
        if (!in_word_) add_part();
        in_word_ = true;
        ++pos_;
      } else if (c == '.') {
        after_dot_ = parts_ > 0;
        in_word_ = false;
        ++pos_;
      } else if (c == ' ' || c == '\t') {
        in_word_ = false;
        ++pos_;
      } else if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
      } else {
        if (c == '\n') next_line();
        parts_ = 0;
        after_dot_ = in_word_ = false;
        ++pos_;
      }
    }
  }

 private:
  const std::string& text_;
  const std::string& source_;
  std::size_t pos_ = 0, line_ = 1, line_start_ = 0;
  int parts_ = 0;
  bool after_dot_ = false, in_word_ = false;

  void next_line() {
    ++line_;
    line_start_ = pos_ + 1;
  }
  void add_part() {
    parts_ = after_dot_ ? parts_ + 1 : 1;
    after_dot_ = false;
    if (parts_ > max_toml_key_parts)
      fail_at(source_, line_, pos_ - line_start_ + 1,
              "a key has more than " + std::to_string(max_toml_key_parts) + " dot-separated parts");
  }
  void skip_string(char quote) {
    const bool multi_line = text_.compare(pos_, 3, std::string(3, quote)) == 0;
    pos_ += multi_line ? 3 : 1;
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '\\' && quote == '"') {
        pos_ += 2;
        continue;
      }
      if (c == '\n') {
        if (!multi_line) return;  // unterminated: toml++ reports it
        next_line();
      }
      if (c == quote && (!multi_line || text_.compare(pos_, 3, std::string(3, quote)) == 0)) {
        pos_ += multi_line ? 3 : 1;
        while (multi_line && pos_ < text_.size() && text_[pos_] == quote) ++pos_;  // """a"""" ends in a quote
        return;
      }
      ++pos_;
    }
  }
};

std::string dotted(const std::string& prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : prefix + "." + std::string(key);
}

void sort_by_position(std::vector<TomlEntry>& entries) {
  std::stable_sort(entries.begin(), entries.end(), [](const TomlEntry& a, const TomlEntry& b) {
    const toml::source_position pa = a.value->source().begin, pb = b.value->source().begin;
    return pa.line != pb.line ? pa.line < pb.line : pa.column < pb.column;
  });
}

void flatten_into(const toml::table& table, const std::string& prefix,
                  const std::function<bool(const std::string&)>& keep_whole, std::vector<TomlEntry>& out) {
  for (const auto& [key, value] : table) {
    std::string name = dotted(prefix, key.str());
    if (const toml::table* nested = value.as_table(); nested && !(keep_whole && keep_whole(name)))
      flatten_into(*nested, name, keep_whole, out);
    else
      out.push_back({std::move(name), &value});
  }
}

}  // namespace

toml::table parse_toml(const std::string& text, const std::string& source) {
  KeyDepthScan(text, source).run();
  try {
    return toml::parse(std::string_view(text), std::string_view(source));
  } catch (const toml::parse_error& e) {
    const std::size_t line = e.source().begin.line;
    fail_at(source, line, e.source().begin.column, printable(e.description()) + quoted_line(text, line));
  }
}

std::string toml_origin(const toml::node& node, const std::string& source) {
  const auto line = node.source().begin.line;
  return line == 0 ? source : source + ":" + std::to_string(line);
}

std::string toml_type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::array:
      return "array";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    case toml::node_type::table:
    case toml::node_type::none:
      break;
  }
  return "table";
}

std::vector<TomlEntry> entries_in_file_order(const toml::table& table) {
  std::vector<TomlEntry> entries;
  for (const auto& [key, value] : table) entries.push_back({std::string(key.str()), &value});
  sort_by_position(entries);
  return entries;
}

std::vector<TomlEntry> flatten_in_file_order(const toml::table& table,
                                             const std::function<bool(const std::string&)>& keep_whole) {
  std::vector<TomlEntry> entries;
  flatten_into(table, "", keep_whole, entries);
  sort_by_position(entries);
  return entries;
}

}  // namespace lpurt::chip
