#include "jobs/toml.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <unordered_map>

namespace lpurt::jobs::toml {

const char* Value::type_name() const {
  switch (type) {
    case Type::string:
      return "string";
    case Type::integer:
      return "integer";
    case Type::floating:
      return "float";
    case Type::boolean:
      return "boolean";
    case Type::array:
      return "array";
    case Type::table:
      break;
  }
  return "table";
}

const Value* Value::find(const std::string& key) const {
  if (type != Type::table) return nullptr;
  for (const auto& [name, value] : table)
    if (name == key) return &value;
  return nullptr;
}

namespace {

// Deep enough for any job file, shallow enough that no recursion over the tree (here, in ~Value, or in
// the code reading the result) comes near the stack limit.
constexpr std::size_t max_depth = 64;
constexpr std::size_t max_shown_length = 40;
constexpr std::pair<char, char> simple_escapes[] = {{'b', '\b'}, {'t', '\t'}, {'n', '\n'}, {'f', '\f'},
                                                    {'r', '\r'}, {'"', '"'},  {'\\', '\\'}};

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex_digit(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_bare_key_char(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-';
}
// A number, boolean or date is read as one run of these, so that "12x" is reported whole as a bad value.
bool is_value_token_char(char c) { return is_bare_key_char(c) || c == '+' || c == '.' || c == ':'; }
bool is_control(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return (byte < 0x20 && c != '\t') || byte == 0x7f;
}
uint32_t hex_value(char c) {
  if (is_digit(c)) return static_cast<uint32_t>(c - '0');
  return static_cast<uint32_t>((c | 0x20) - 'a' + 10);
}

// Input echoed in a message: printable ASCII as is, any other byte as \xNN, cut after 40 bytes, so that
// the message stays one readable line whatever the file holds.
std::string printable(const std::string& text) {
  std::string shown;
  for (std::size_t i = 0; i < text.size() && i < max_shown_length; ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte == '"' || byte == '\\') {
      shown += '\\';
      shown += text[i];
    } else if (byte < 0x20 || byte >= 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02X", static_cast<unsigned>(byte));
      shown += escaped;
    } else {
      shown += text[i];
    }
  }
  if (text.size() > max_shown_length) shown += "...";
  return shown;
}
std::string quoted(const std::string& text) { return '"' + printable(text) + '"'; }

// The first `count` parts of a dotted key, as the message names it.
std::string dotted(const std::vector<std::string>& parts, std::size_t count) {
  std::string joined;
  for (std::size_t i = 0; i < count; ++i) joined += (i == 0 ? "" : ".") + parts[i];
  return joined;
}

std::string with_article(const Value& value) {
  const std::string name = value.type_name();
  return (name[0] == 'a' || name[0] == 'i' ? "an " : "a ") + name;
}

// How a table came to exist decides what may still add to it (TOML 1.0): a header defines a table once,
// dotted keys extend only tables that dotted keys created, and an inline table is complete as written.
enum class TableOrigin { implied_by_header, header, dotted_key, inline_value };

struct TableState;
struct Entry {
  std::size_t position;                     // in the table's Value::table
  std::unique_ptr<TableState> table_state;  // set exactly when the entry is a table
};
// What Value has no room for: how a table came to exist, and an index of its keys that keeps the parse
// linear in the size of the file however many keys a table has.
struct TableState {
  TableOrigin origin;
  std::unordered_map<std::string, Entry> entries;
};

// A table being filled, `depth` levels below the root. The Value pointer stays valid while keys are added
// to this table or below it; a new header starts again from the root.
struct TableRef {
  Value* value;
  TableState* state;
  std::size_t depth;
};

// Entry `key` of `table` (its state set if it is a table), or a null value.
TableRef find_entry(TableRef table, const std::string& key) {
  const auto found = table.state->entries.find(key);
  if (found == table.state->entries.end()) return {nullptr, nullptr, 0};
  Value* value = &table.value->table[found->second.position].second;
  TableState* state = found->second.table_state.get();
  LPURT_ASSERT((value->type == Value::Type::table) == (state != nullptr));
  return {value, state, table.depth + 1};
}

// Adds `key = value` to `table`; `origin` says how `value` came to exist if it is a table.
TableRef add_entry(TableRef table, const std::string& key, Value value, TableOrigin origin) {
  std::unique_ptr<TableState> state;
  if (value.type == Value::Type::table) state = std::make_unique<TableState>(TableState{origin, {}});
  TableState* added_state = state.get();
  table.state->entries.emplace(key, Entry{table.value->table.size(), std::move(state)});
  table.value->table.emplace_back(key, std::move(value));
  return {&table.value->table.back().second, added_state, table.depth + 1};
}

TableRef add_table(TableRef parent, const std::string& key, TableOrigin origin, int line) {
  Value table;
  table.type = Value::Type::table;
  table.line = line;
  return add_entry(parent, key, std::move(table), origin);
}

class Parser {
 public:
  Parser(const std::string& text, const std::string& source_name) : text_(text), source_name_(source_name) {}

  Value parse_document() {
    Value root;
    root.type = Value::Type::table;
    root.line = 1;
    TableState root_state{TableOrigin::header, {}};
    const TableRef root_ref{&root, &root_state, 0};
    TableRef current = root_ref;
    if (starts_with("\xEF\xBB\xBF")) pos_ += 3;  // a UTF-8 byte order mark, as some editors write
    for (;;) {
      skip_whitespace();
      skip_comment();
      if (at_end()) return root;
      if (at_newline()) {
        consume_newline();
      } else if (peek() == '[') {
        current = parse_header(root_ref);
      } else {
        const std::string key = parse_key_value(current);
        expect_end_of_line("the value of key " + key);
      }
    }
  }

 private:
  const std::string& text_;
  const std::string& source_name_;
  std::size_t pos_ = 0;
  int line_ = 1;

  [[noreturn]] void fail(const std::string& what) const { fail_at(line_, what); }
  [[noreturn]] void fail_too_deep(const std::string& what) const {
    fail(what + " is nested more than " + std::to_string(max_depth) +
         " levels deep (tables, arrays and inline tables together)");
  }
  [[noreturn]] void fail_at(int line, const std::string& what) const {
    throw ParseError(source_name_ + ":" + std::to_string(line) + ": " + what);
  }

  bool at_end() const { return pos_ >= text_.size(); }
  // '\0' past the end; a NUL byte in the text is rejected wherever it appears, like any control character.
  char peek() const { return at_end() ? '\0' : text_[pos_]; }
  bool starts_with(const char* prefix) const {
    const std::size_t length = std::strlen(prefix);
    return text_.size() - pos_ >= length && text_.compare(pos_, length, prefix) == 0;
  }
  bool at_newline() const { return peek() == '\n' || starts_with("\r\n"); }
  void consume_newline() {
    pos_ += peek() == '\n' ? 1U : 2U;
    ++line_;
  }
  std::string describe_next() const {
    if (at_end()) return "end of file";
    if (at_newline()) return "end of line";
    return quoted(std::string(1, text_[pos_]));
  }

  void skip_whitespace() {
    while (peek() == ' ' || peek() == '\t') ++pos_;
  }
  void skip_comment() {
    if (peek() != '#') return;
    for (++pos_; !at_end() && !at_newline(); ++pos_)
      if (is_control(text_[pos_])) fail("control character " + printable(text_.substr(pos_, 1)) + " in comment");
  }
  // Array elements may be spread over lines, with comments between them.
  void skip_blank_lines() {
    for (;;) {
      skip_whitespace();
      skip_comment();
      if (!at_newline()) return;
      consume_newline();
    }
  }
  void expect_end_of_line(const std::string& after) {
    skip_whitespace();
    skip_comment();
    if (at_end()) return;
    if (!at_newline()) fail("expected end of line after " + after + ", found " + describe_next());
    consume_newline();
  }

  TableRef parse_header(TableRef root) {
    ++pos_;
    if (peek() == '[') fail("arrays of tables ([[...]]) are not supported");
    const std::vector<std::string> key = parse_key(" in a table header");
    const std::string shown = "[" + printable(dotted(key, key.size())) + "]";
    if (peek() != ']') fail("expected ']' to close table header " + shown + ", found " + describe_next());
    ++pos_;
    if (key.size() > max_depth) fail_too_deep("table header " + shown);
    TableRef table = root;
    for (std::size_t i = 0; i < key.size(); ++i) {
      const bool is_last = i + 1 == key.size();
      const TableRef existing = find_entry(table, key[i]);
      if (existing.value == nullptr) {
        table = add_table(table, key[i], is_last ? TableOrigin::header : TableOrigin::implied_by_header, line_);
        continue;
      }
      const std::string name = quoted(dotted(key, i + 1));
      const std::string first_line = std::to_string(existing.value->line);
      if (existing.state == nullptr)
        fail(name + " is already " + with_article(*existing.value) + " defined on line " + first_line);
      TableState& state = *existing.state;
      if (state.origin == TableOrigin::inline_value)
        fail("table " + shown + " cannot add to inline table " + name + " defined on line " + first_line);
      if (is_last) {
        if (state.origin == TableOrigin::header) fail("table " + shown + " is already defined on line " + first_line);
        if (state.origin == TableOrigin::dotted_key)
          fail("table " + shown + " is already defined by dotted keys on line " + first_line);
        state.origin = TableOrigin::header;
        existing.value->line = line_;
      }
      table = existing;
    }
    expect_end_of_line("table header " + shown);
    return table;
  }

  // Parses `key = value` into `table` and returns the key as messages show it.
  std::string parse_key_value(TableRef table) {
    const int key_line = line_;
    const std::vector<std::string> key = parse_key(" in a key");
    const std::string shown = quoted(dotted(key, key.size()));
    if (peek() != '=') fail("expected '=' after key " + shown + ", found " + describe_next());
    ++pos_;
    skip_whitespace();
    Value value = parse_value(" for key " + shown, table.depth + key.size());

    for (std::size_t i = 0; i + 1 < key.size(); ++i) table = enter_for_dotted_key(table, key, i, key_line);
    if (const Value* existing = find_entry(table, key.back()).value) {
      const std::string first_line = std::to_string(existing->line);
      if (existing->type == Value::Type::table)
        fail_at(key_line, shown + " is already a table defined on line " + first_line);
      fail_at(key_line, "duplicate key " + shown + " (first defined on line " + first_line + ")");
    }
    add_entry(table, key.back(), std::move(value), TableOrigin::inline_value);
    return shown;
  }

  // The table that the first `index + 1` parts of a dotted key name, created if missing.
  TableRef enter_for_dotted_key(TableRef parent, const std::vector<std::string>& key, std::size_t index, int key_line) {
    const TableRef existing = find_entry(parent, key[index]);
    if (existing.value == nullptr) return add_table(parent, key[index], TableOrigin::dotted_key, key_line);
    const std::string name = quoted(dotted(key, index + 1));
    const std::string first_line = std::to_string(existing.value->line);
    if (existing.state == nullptr)
      fail_at(key_line, name + " is already " + with_article(*existing.value) + " defined on line " + first_line);
    const TableState& state = *existing.state;
    if (state.origin == TableOrigin::inline_value)
      fail_at(key_line, "key " + quoted(dotted(key, key.size())) + " cannot add to inline table " + name +
                            " defined on line " + first_line);
    if (state.origin != TableOrigin::dotted_key)
      fail_at(key_line, "dotted key " + quoted(dotted(key, key.size())) + " cannot add to table " + name +
                            ", which a header defines on line " + first_line);
    return existing;
  }

  std::vector<std::string> parse_key(const std::string& context) {
    std::vector<std::string> parts;
    for (;;) {
      skip_whitespace();
      if (peek() == '"') {
        parts.push_back(parse_basic_string(context));
      } else if (peek() == '\'') {
        parts.push_back(parse_literal_string(context));
      } else {
        const std::size_t start = pos_;
        while (is_bare_key_char(peek())) ++pos_;
        if (pos_ == start) fail("expected a key, found " + describe_next());
        parts.push_back(text_.substr(start, pos_ - start));
      }
      skip_whitespace();
      if (peek() != '.') return parts;
      ++pos_;
    }
  }

  // `depth` is the value's level below the root; `context` ends every message about the value, e.g.
  // ` for key "chips"`.
  Value parse_value(const std::string& context, std::size_t depth) {
    if (depth > max_depth) fail_too_deep("the value" + context);
    Value value;
    value.line = line_;
    const char next = peek();
    if (next == '"' || next == '\'') {
      if (starts_with("\"\"\"") || starts_with("'''")) fail("multi-line strings are not supported" + context);
      value.type = Value::Type::string;
      value.string_value = next == '"' ? parse_basic_string(context) : parse_literal_string(context);
    } else if (next == '[') {
      parse_array(value, context, depth);
    } else if (next == '{') {
      parse_inline_table(value, context, depth);
    } else {
      parse_scalar(value, context);
    }
    return value;
  }

  void parse_array(Value& array, const std::string& context, std::size_t depth) {
    const int open_line = line_;
    array.type = Value::Type::array;
    ++pos_;
    for (;;) {
      skip_blank_lines();
      if (peek() == ']') break;
      array.array.push_back(parse_value(context, depth + 1));
      skip_blank_lines();
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != ']') {
        fail("expected ',' or ']' in the array" + context + " (opened on line " + std::to_string(open_line) +
             "), found " + describe_next());
      }
    }
    ++pos_;
  }

  // TOML 1.0 keeps an inline table on one line (an array inside it may still span lines), so a newline
  // between the braces is an error that says so rather than a guess at where the table ends.
  void parse_inline_table(Value& table, const std::string& context, std::size_t depth) {
    table.type = Value::Type::table;
    TableState state{TableOrigin::inline_value, {}};
    ++pos_;
    skip_inline_table_whitespace(context);
    if (peek() == '}') {
      ++pos_;
      return;
    }
    for (;;) {
      parse_key_value({&table, &state, depth});
      skip_inline_table_whitespace(context);
      if (peek() == '}') break;
      if (peek() != ',') fail("expected ',' or '}' in the inline table" + context + ", found " + describe_next());
      ++pos_;
      skip_inline_table_whitespace(context);
      if (peek() == '}') fail("trailing comma in the inline table" + context + " (TOML does not allow one)");
    }
    ++pos_;
  }
  void skip_inline_table_whitespace(const std::string& context) {
    skip_whitespace();
    if (at_newline()) fail("the inline table" + context + " must end with '}' on the line where it starts");
  }

  [[noreturn]] void fail_unterminated_string(const std::string& context, char quote) const {
    fail("unterminated string" + context + " (expected " + quote + " before the end of the line)");
  }

  std::string parse_basic_string(const std::string& context) {
    ++pos_;
    std::string text;
    for (;;) {
      if (at_end() || at_newline()) fail_unterminated_string(context, '"');
      const char c = text_[pos_++];
      if (c == '"') return text;
      if (c == '\\') {
        append_escape(text, context);
      } else if (is_control(c)) {
        fail("control character " + printable(std::string(1, c)) + " in string" + context + " (write it as an escape)");
      } else {
        text += c;
      }
    }
  }

  // A backslash before the end of the line would continue a multi-line string, which this subset lacks.
  void append_escape(std::string& text, const std::string& context) {
    if (at_end() || at_newline()) fail_unterminated_string(context, '"');
    const char c = text_[pos_++];
    for (const auto& [letter, meaning] : simple_escapes) {
      if (c == letter) {
        text += meaning;
        return;
      }
    }
    if (c == 'u' || c == 'U') {
      append_utf8(text, parse_hex_digits(c == 'u' ? 4 : 8, context), context);
      return;
    }
    fail("invalid escape \\" + printable(std::string(1, c)) + " in string" + context +
         " (expected \\b \\t \\n \\f \\r \\\" \\\\ \\uXXXX or \\UXXXXXXXX)");
  }

  uint32_t parse_hex_digits(int count, const std::string& context) {
    uint32_t code_point = 0;
    for (int i = 0; i < count; ++i) {
      if (!is_hex_digit(peek()))
        fail("expected " + std::to_string(count) + " hex digits after \\" + (count == 4 ? "u" : "U") + context);
      code_point = code_point * 16 + hex_value(text_[pos_++]);
    }
    return code_point;
  }

  void append_utf8(std::string& text, uint32_t code_point, const std::string& context) {
    if ((code_point >= 0xD800 && code_point <= 0xDFFF) || code_point > 0x10FFFF) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "U+%X", static_cast<unsigned>(code_point));
      fail("escape " + std::string(hex) + " is not a Unicode scalar value (a surrogate or above U+10FFFF)" + context);
    }
    if (code_point < 0x80) {
      text += static_cast<char>(code_point);
    } else if (code_point < 0x800) {
      text += static_cast<char>(0xC0 | (code_point >> 6));
      text += static_cast<char>(0x80 | (code_point & 0x3F));
    } else if (code_point < 0x10000) {
      text += static_cast<char>(0xE0 | (code_point >> 12));
      text += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
      text += static_cast<char>(0x80 | (code_point & 0x3F));
    } else {
      text += static_cast<char>(0xF0 | (code_point >> 18));
      text += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
      text += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
      text += static_cast<char>(0x80 | (code_point & 0x3F));
    }
  }

  // Invalid UTF-8 passes through unchanged: the job schema compares strings with known names.
  std::string parse_literal_string(const std::string& context) {
    const std::size_t start = ++pos_;
    for (;;) {
      if (at_end() || at_newline()) fail_unterminated_string(context, '\'');
      if (text_[pos_] == '\'') return text_.substr(start, pos_++ - start);
      if (is_control(text_[pos_]))
        fail("control character " + printable(text_.substr(pos_, 1)) + " in string" + context);
      ++pos_;
    }
  }

  void parse_scalar(Value& value, const std::string& context) {
    const std::size_t start = pos_;
    while (is_value_token_char(peek())) ++pos_;
    const std::string token = text_.substr(start, pos_ - start);
    if (token.empty()) fail("expected a value" + context + ", found " + describe_next());
    if (token == "true" || token == "false") {
      value.type = Value::Type::boolean;
      value.bool_value = token == "true";
      return;
    }
    const std::size_t sign_length = token[0] == '+' || token[0] == '-' ? 1 : 0;
    const std::string magnitude = token.substr(sign_length);
    if (magnitude == "inf" || magnitude == "nan") {
      value.type = Value::Type::floating;
      value.float_value =
          magnitude == "inf" ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
      if (token[0] == '-') value.float_value = -value.float_value;
      return;
    }
    if (is_date_or_time(token)) fail("dates and times are not supported" + context + ", found " + quoted(token));
    if (magnitude.size() > 1 && magnitude[0] == '0' &&
        (magnitude[1] == 'x' || magnitude[1] == 'o' || magnitude[1] == 'b')) {
      const char* base = magnitude[1] == 'x' ? "hexadecimal" : magnitude[1] == 'o' ? "octal" : "binary";
      fail(std::string(base) + " integers are not supported" + context + ", found " + quoted(token) +
           " (write it in decimal)");
    }
    parse_number(value, token, sign_length, context);
  }

  static bool is_date_or_time(const std::string& token) {
    const auto digits_then = [&](std::size_t count, char separator) {
      if (token.size() <= count || token[count] != separator) return false;
      for (std::size_t i = 0; i < count; ++i)
        if (!is_digit(token[i])) return false;
      return true;
    };
    return digits_then(4, '-') || digits_then(2, ':');
  }

  // Digits with single underscores between them, from `start`; the end of the run, or npos if none.
  static std::size_t skip_digits(const std::string& token, std::size_t start) {
    if (start >= token.size() || !is_digit(token[start])) return std::string::npos;
    std::size_t end = start + 1;
    while (end < token.size() &&
           (is_digit(token[end]) || (token[end] == '_' && end + 1 < token.size() && is_digit(token[end + 1]))))
      ++end;
    return end;
  }

  void parse_number(Value& value, const std::string& token, std::size_t sign_length, const std::string& context) {
    const std::size_t integer_end = skip_digits(token, sign_length);
    std::size_t end = integer_end;
    bool is_float = false;
    if (end < token.size() && token[end] == '.') {
      end = skip_digits(token, end + 1);
      is_float = true;
    }
    if (end < token.size() && (token[end] == 'e' || token[end] == 'E')) {
      ++end;
      if (end < token.size() && (token[end] == '+' || token[end] == '-')) ++end;
      end = skip_digits(token, end);
      is_float = true;
    }
    if (end != token.size())
      fail("invalid value " + quoted(token) + context +
           " (expected a number, a quoted string, true, false, an array or an inline table)");
    if (token[sign_length] == '0' && integer_end - sign_length > 1)
      fail("leading zeros are not allowed in " + quoted(token) + context);

    std::string digits;
    for (const char c : token)
      if (c != '_') digits += c;
    errno = 0;
    if (is_float) {
      value.type = Value::Type::floating;
      value.float_value = std::strtod(digits.c_str(), nullptr);
      if (errno == ERANGE && std::isinf(value.float_value))
        fail("float " + printable(token) + " is out of range" + context);
    } else {
      value.type = Value::Type::integer;
      value.integer_value = static_cast<int64_t>(std::strtoll(digits.c_str(), nullptr, 10));
      if (errno == ERANGE) fail("integer " + printable(token) + " is out of range (64-bit signed)" + context);
    }
  }
};

}  // namespace

Value parse(const std::string& text, const std::string& source_name) {
  return Parser(text, source_name).parse_document();
}

}  // namespace lpurt::jobs::toml
