#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "jobs/toml.hpp"

using lpurt::jobs::toml::parse;
using lpurt::jobs::toml::ParseError;
using lpurt::jobs::toml::Value;

namespace {

// The message of the ParseError that parsing `text` as "job.toml" throws, checked to be one printable line.
std::string error_of(const std::string& text) {
  try {
    parse(text, "job.toml");
  } catch (const ParseError& e) {
    const std::string message = e.what();
    for (const char c : message) {
      const auto byte = static_cast<unsigned char>(c);
      EXPECT_TRUE(byte >= 0x20 && byte < 0x7f) << "unprintable byte " << int{byte} << " in: " << message;
    }
    return message;
  }
  ADD_FAILURE() << "no ParseError for: " << text.substr(0, 200);
  return "";
}

testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return testing::AssertionSuccess();
  return testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

// The value at a dotted path of plain names, failing the test if a step is missing.
const Value& at(const Value& root, const std::string& path) {
  const Value* value = &root;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t dot = std::min(path.find('.', start), path.size());
    const std::string key = path.substr(start, dot - start);
    value = value->find(key);
    if (value == nullptr) {
      ADD_FAILURE() << "no " << path;
      static const Value missing;
      return missing;
    }
    start = dot + 1;
  }
  return *value;
}

std::vector<std::string> keys_of(const Value& table) {
  std::vector<std::string> keys;
  for (const auto& entry : table.table) keys.push_back(entry.first);
  return keys;
}

const char* const example_job = R"(# llama2-70b: how do latency and throughput scale with chips?
[study]
name = "llama2-70b-chips"
output = "studies/llama2-70b-chips"
mode = "timing-only"
ranks = 2
throttle = 4

[model]
preset = "llama2-70b"

[system]
preset = "groq-lpu-v1"
set = { link_bytes_per_s = 28e9, hop_latency_ns = 300.0 }

[run]
prompt_len = 512
tokens = 128
batch = 1

[sweep]
chips = [72, 144, 288,
         576, 1_152]   # doubling
topology = ["dragonfly", 'chain']
)";

}  // namespace

TEST(Toml, EmptyInputGivesAnEmptyTable) {
  for (const std::string text : {"", "\n\n", "# only a comment", "  \t\r\n# c\r\n"}) {
    const Value root = parse(text, "job.toml");
    EXPECT_EQ(root.type, Value::Type::table);
    EXPECT_TRUE(root.table.empty()) << text;
  }
}

TEST(Toml, ParsesTheExampleJobFile) {
  const Value root = parse(example_job, "job.toml");
  EXPECT_EQ(keys_of(root), (std::vector<std::string>{"study", "model", "system", "run", "sweep"}));
  EXPECT_EQ(keys_of(at(root, "study")), (std::vector<std::string>{"name", "output", "mode", "ranks", "throttle"}));
  EXPECT_EQ(at(root, "study").line, 2);
  EXPECT_EQ(at(root, "study.name").string_value, "llama2-70b-chips");
  EXPECT_EQ(at(root, "study.name").line, 3);
  EXPECT_EQ(at(root, "study.mode").string_value, "timing-only");
  EXPECT_EQ(at(root, "study.ranks").type, Value::Type::integer);
  EXPECT_EQ(at(root, "study.ranks").integer_value, 2);
  EXPECT_EQ(at(root, "study.throttle").line, 7);
  EXPECT_EQ(at(root, "model.preset").string_value, "llama2-70b");

  const Value& set = at(root, "system.set");
  EXPECT_EQ(set.type, Value::Type::table);
  EXPECT_EQ(set.line, 14);
  EXPECT_EQ(keys_of(set), (std::vector<std::string>{"link_bytes_per_s", "hop_latency_ns"}));
  EXPECT_EQ(at(set, "link_bytes_per_s").type, Value::Type::floating);
  EXPECT_DOUBLE_EQ(at(set, "link_bytes_per_s").float_value, 28e9);
  EXPECT_DOUBLE_EQ(at(set, "hop_latency_ns").float_value, 300.0);
  EXPECT_EQ(at(root, "run.tokens").integer_value, 128);

  const Value& chips = at(root, "sweep.chips");
  ASSERT_EQ(chips.type, Value::Type::array);
  EXPECT_EQ(chips.line, 22);
  ASSERT_EQ(chips.array.size(), 5U);
  const int64_t expected_chips[] = {72, 144, 288, 576, 1152};
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(chips.array[i].integer_value, expected_chips[i]);
  EXPECT_EQ(chips.array[3].line, 23);
  const Value& topology = at(root, "sweep.topology");
  ASSERT_EQ(topology.array.size(), 2U);
  EXPECT_EQ(topology.array[0].string_value, "dragonfly");
  EXPECT_EQ(topology.array[1].string_value, "chain");
  EXPECT_EQ(topology.line, 24);
}

TEST(Toml, KeepsKeysInFileOrder) {
  const Value root = parse("zeta = 1\nalpha = 2\nmid = 3\n[b]\n[a]\n", "job.toml");
  EXPECT_EQ(keys_of(root), (std::vector<std::string>{"zeta", "alpha", "mid", "b", "a"}));
}

TEST(Toml, ParsesIntegers) {
  const Value root =
      parse("a = 0\nb = +17\nc = -42\nd = 1_000_000\ne = 9223372036854775807\nf = -9223372036854775808\ng = -0\n",
            "job.toml");
  EXPECT_EQ(at(root, "a").integer_value, 0);
  EXPECT_EQ(at(root, "b").integer_value, 17);
  EXPECT_EQ(at(root, "c").integer_value, -42);
  EXPECT_EQ(at(root, "d").integer_value, 1000000);
  EXPECT_EQ(at(root, "e").integer_value, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(at(root, "f").integer_value, std::numeric_limits<int64_t>::min());
  EXPECT_EQ(at(root, "g").integer_value, 0);
  for (const auto& entry : root.table) EXPECT_EQ(entry.second.type, Value::Type::integer) << entry.first;
}

TEST(Toml, ParsesFloats) {
  const Value root = parse(
      "a = 1.5\nb = -0.25\nc = 5e+22\nd = 1e06\ne = -2E-2\nf = 6.626e-34\ng = 224_617.445_991\nh = 0e0\n"
      "i = inf\nj = +inf\nk = -inf\nl = nan\nm = -nan\nn = 1e-400\n",
      "job.toml");
  for (const auto& entry : root.table) EXPECT_EQ(entry.second.type, Value::Type::floating) << entry.first;
  EXPECT_DOUBLE_EQ(at(root, "a").float_value, 1.5);
  EXPECT_DOUBLE_EQ(at(root, "b").float_value, -0.25);
  EXPECT_DOUBLE_EQ(at(root, "c").float_value, 5e22);
  EXPECT_DOUBLE_EQ(at(root, "d").float_value, 1e6);
  EXPECT_DOUBLE_EQ(at(root, "e").float_value, -0.02);
  EXPECT_DOUBLE_EQ(at(root, "f").float_value, 6.626e-34);
  EXPECT_DOUBLE_EQ(at(root, "g").float_value, 224617.445991);
  EXPECT_EQ(at(root, "h").float_value, 0.0);
  EXPECT_TRUE(std::isinf(at(root, "i").float_value) && at(root, "i").float_value > 0);
  EXPECT_TRUE(std::isinf(at(root, "j").float_value) && at(root, "j").float_value > 0);
  EXPECT_TRUE(std::isinf(at(root, "k").float_value) && at(root, "k").float_value < 0);
  EXPECT_TRUE(std::isnan(at(root, "l").float_value));
  EXPECT_TRUE(std::isnan(at(root, "m").float_value));
  EXPECT_EQ(at(root, "n").float_value, 0.0);  // underflow rounds to zero rather than failing
}

TEST(Toml, ParsesBooleans) {
  const Value root = parse("yes = true\nno = false\n", "job.toml");
  EXPECT_EQ(at(root, "yes").type, Value::Type::boolean);
  EXPECT_TRUE(at(root, "yes").bool_value);
  EXPECT_FALSE(at(root, "no").bool_value);
}

TEST(Toml, ParsesStringEscapesAndLiteralStrings) {
  const Value root = parse(
      R"(basic = "tab\tnl\nquote\"back\\bs\bff\fcr\r"
unicode = "caf\u00e9 \u20AC \U0001F600"
raw_utf8 = "größe"
literal = 'C:\path\no "escapes"'
empty = ""
empty_literal = ''
tab = "a	b"
)",
      "job.toml");
  EXPECT_EQ(at(root, "basic").string_value, "tab\tnl\nquote\"back\\bs\bff\fcr\r");
  EXPECT_EQ(at(root, "unicode").string_value, "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(at(root, "raw_utf8").string_value, u8"gr\u00f6\u00dfe");
  EXPECT_EQ(at(root, "literal").string_value, "C:\\path\\no \"escapes\"");
  EXPECT_EQ(at(root, "empty").string_value, "");
  EXPECT_EQ(at(root, "empty_literal").string_value, "");
  EXPECT_EQ(at(root, "tab").string_value, "a\tb");
  EXPECT_EQ(at(root, "unicode").type, Value::Type::string);
}

TEST(Toml, HeadersCreateNestedTablesImplicitly) {
  const Value root = parse("[a.b.c]\nx = 1\n\n[a]\ny = 2\n[a.d]\n", "job.toml");
  EXPECT_EQ(keys_of(root), std::vector<std::string>{"a"});
  EXPECT_EQ(keys_of(at(root, "a")), (std::vector<std::string>{"b", "y", "d"}));
  EXPECT_EQ(at(root, "a.b.c.x").integer_value, 1);
  EXPECT_EQ(at(root, "a.y").integer_value, 2);
  EXPECT_EQ(at(root, "a.b").line, 1);
  EXPECT_EQ(at(root, "a.b.c").line, 1);
  EXPECT_EQ(at(root, "a").line, 4);  // its own header, once it has one
  EXPECT_EQ(at(root, "a.d").line, 6);
  EXPECT_TRUE(at(root, "a.d").table.empty());
}

TEST(Toml, HeadersAcceptQuotedKeysAndSpaces) {
  const Value root = parse("[ a . \"b.c\" . 'd e' ]\nx = 1\n", "job.toml");
  EXPECT_EQ(at(root, "a").find("b.c")->find("d e")->find("x")->integer_value, 1);
}

TEST(Toml, DottedKeysCreateNestedTables) {
  const Value root = parse(
      "[fruit]\napple.color = \"red\"\napple.taste.sweet = true\n\"quoted.key\".x = 1\nsite.\"google.com\" = 2\n"
      "[fruit.apple.texture]\nsmooth = true\n",
      "job.toml");
  const Value& apple = at(root, "fruit.apple");
  EXPECT_EQ(apple.type, Value::Type::table);
  EXPECT_EQ(apple.line, 2);
  EXPECT_EQ(keys_of(apple), (std::vector<std::string>{"color", "taste", "texture"}));
  EXPECT_EQ(at(apple, "color").string_value, "red");
  EXPECT_EQ(at(apple, "taste").line, 3);
  EXPECT_TRUE(at(apple, "taste.sweet").bool_value);
  EXPECT_EQ(at(root, "fruit").find("quoted.key")->find("x")->integer_value, 1);
  EXPECT_EQ(at(root, "fruit.site").find("google.com")->integer_value, 2);
  EXPECT_TRUE(at(apple, "texture.smooth").bool_value);
  EXPECT_EQ(at(apple, "texture").line, 6);
}

TEST(Toml, ParsesInlineTables) {
  const Value root = parse(
      "empty = {}\npoint = { x = 1, y = -2 }\nnested = {inner = {deep = 'yes'}, list = [1,\n  2], a.b = 3, a.c = 4}\n",
      "job.toml");
  EXPECT_EQ(at(root, "empty").type, Value::Type::table);
  EXPECT_TRUE(at(root, "empty").table.empty());
  EXPECT_EQ(keys_of(at(root, "point")), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(at(root, "point.y").integer_value, -2);
  EXPECT_EQ(at(root, "point").line, 2);
  EXPECT_EQ(at(root, "nested.inner.deep").string_value, "yes");
  EXPECT_EQ(at(root, "nested.list").array.size(), 2U);
  EXPECT_EQ(at(root, "nested.a.b").integer_value, 3);
  EXPECT_EQ(at(root, "nested.a.c").integer_value, 4);
  EXPECT_EQ(at(root, "nested.a.c").line, 4);
}

TEST(Toml, ParsesArraysOverLinesWithCommentsAndTrailingComma) {
  const Value root = parse(
      "empty = []\n"
      "list = [ # opening comment\n"
      "  1,   # one\n"
      "\n"
      "  'two', # two\n"
      "  [3.0, [true]],\n"
      "  { k = 4 },\n"
      "]  # done\n"
      "after = 5\n",
      "job.toml");
  EXPECT_TRUE(at(root, "empty").array.empty());
  const Value& list = at(root, "list");
  ASSERT_EQ(list.array.size(), 4U);
  EXPECT_EQ(list.line, 2);
  EXPECT_EQ(list.array[0].type, Value::Type::integer);
  EXPECT_EQ(list.array[0].line, 3);
  EXPECT_EQ(list.array[1].string_value, "two");
  EXPECT_EQ(list.array[1].line, 5);
  EXPECT_EQ(list.array[2].array[1].array[0].bool_value, true);
  EXPECT_EQ(list.array[3].find("k")->integer_value, 4);
  EXPECT_EQ(at(root, "after").line, 9);
}

TEST(Toml, HandlesCrLfLineEndings) {
  const Value root = parse("# c\r\n[a]\r\nx = 'v' # c\r\nlist = [1,\r\n  2]\r\n\r\n[b]\r\ny = 2", "job.toml");
  EXPECT_EQ(at(root, "a.x").string_value, "v");
  EXPECT_EQ(at(root, "a.x").line, 3);
  EXPECT_EQ(at(root, "a.list").array[1].line, 5);
  EXPECT_EQ(at(root, "b").line, 7);
  EXPECT_EQ(at(root, "b.y").integer_value, 2);
  EXPECT_TRUE(contains(error_of("a = 1\r\nb = \r\n"), "job.toml:2: expected a value for key \"b\", found end of line"));
}

TEST(Toml, AcceptsALeadingByteOrderMark) {
  EXPECT_EQ(parse("\xEF\xBB\xBFx = 1\n", "job.toml").find("x")->integer_value, 1);
}

TEST(Toml, TypeNamesAndFind) {
  const Value root = parse("s = ''\ni = 1\nf = 1.0\nb = true\na = []\nt = {}\n", "job.toml");
  EXPECT_STREQ(at(root, "s").type_name(), "string");
  EXPECT_STREQ(at(root, "i").type_name(), "integer");
  EXPECT_STREQ(at(root, "f").type_name(), "float");
  EXPECT_STREQ(at(root, "b").type_name(), "boolean");
  EXPECT_STREQ(at(root, "a").type_name(), "array");
  EXPECT_STREQ(at(root, "t").type_name(), "table");
  EXPECT_STREQ(root.type_name(), "table");
  EXPECT_EQ(root.find("missing"), nullptr);
  EXPECT_EQ(at(root, "i").find("i"), nullptr);  // not a table
}

TEST(Toml, NestsUpTo64LevelsDeep) {
  EXPECT_EQ(parse("a = " + std::string(64, '[') + std::string(64, ']'), "job.toml").find("a")->type,
            Value::Type::array);
  std::string inline_tables = "a = ";
  for (int i = 0; i < 63; ++i) inline_tables += "{ k = ";
  inline_tables += "1" + std::string(63, '}');
  EXPECT_EQ(parse(inline_tables, "job.toml").find("a")->type, Value::Type::table);

  std::string deep_header = "[t";
  for (int i = 1; i < 64; ++i) deep_header += ".t";
  EXPECT_NO_THROW(parse(deep_header + "]\n", "job.toml"));
  // Levels add up across headers, dotted keys, arrays and inline tables.
  EXPECT_NO_THROW(parse("[a.b]\nc.d = { e = " + std::string(60, '[') + std::string(60, ']') + " }\n", "job.toml"));
  EXPECT_TRUE(contains(error_of("[a.b]\nc.d = { e = " + std::string(61, '[') + std::string(61, ']') + " }\n"),
                       "job.toml:2: the value for key \"e\" is nested more than 64 levels deep"));
}

TEST(Toml, RejectsDeeperNestingWithoutCrashing) {
  EXPECT_TRUE(contains(error_of("a = " + std::string(65, '[') + std::string(65, ']')),
                       "job.toml:1: the value for key \"a\" is nested more than 64 levels deep (tables, arrays and "
                       "inline tables together)"));
  EXPECT_TRUE(contains(error_of("\n\nx = " + std::string(100, '[')), "job.toml:3: the value for key \"x\" is nested"));
  std::string inline_tables = "deep = ";
  for (int i = 0; i < 100; ++i) inline_tables += "{k=";
  EXPECT_TRUE(contains(error_of(inline_tables), "the value for key \"k\" is nested more than 64 levels deep"));
  EXPECT_TRUE(contains(error_of(std::string(100, '[')), "job.toml:1: arrays of tables ([[...]]) are not supported"));

  // Far deeper than the stack could hold if the tree were built and then destroyed recursively.
  std::string many_parts = "a";
  for (int i = 0; i < 200000; ++i) many_parts += ".a";
  EXPECT_TRUE(contains(error_of("[" + many_parts + "]\n"), "job.toml:1: table header [a.a.a.a"));
  EXPECT_TRUE(contains(error_of("[" + many_parts + "]\n"), "...] is nested more than 64 levels deep"));
  EXPECT_TRUE(contains(error_of("\n" + many_parts + " = 1\n"), "job.toml:2: the value for key \"a.a.a.a"));
  EXPECT_TRUE(
      contains(error_of("[a.b]\nc.d = { e = " + std::string(100000, '[')), "is nested more than 64 levels deep"));
}

TEST(Toml, ParsesManyKeysAndTablesInLinearTime) {
  std::string keys;
  for (int i = 0; i < 100000; ++i) keys += "k" + std::to_string(i) + " = " + std::to_string(i) + "\n";
  std::string tables;
  for (int i = 0; i < 50000; ++i) tables += "[t" + std::to_string(i) + "]\nx.y = 1\n";
  const Value root = parse(keys + tables, "job.toml");  // a quadratic key lookup takes tens of seconds here
  EXPECT_EQ(root.table.size(), 150000U);
  EXPECT_EQ(root.table[99999].second.integer_value, 99999);
  EXPECT_TRUE(
      contains(error_of(keys + "k500 = 1\n"), "job.toml:100001: duplicate key \"k500\" (first defined on line 501)"));
  EXPECT_TRUE(contains(error_of(tables + "[t7]\n"), "job.toml:100001: table [t7] is already defined on line 15"));
}

TEST(Toml, RejectsDuplicateKeys) {
  EXPECT_TRUE(contains(error_of("[sweep]\n\nchips = 1\nx = 2\n\n\nchips = [2]\n"),
                       "job.toml:7: duplicate key \"chips\" (first defined on line 3)"));
  EXPECT_TRUE(contains(error_of("a = 1\n\"a\" = 2\n"), "job.toml:2: duplicate key \"a\" (first defined on line 1)"));
  EXPECT_TRUE(
      contains(error_of("p = { x = 1, x = 2 }\n"), "job.toml:1: duplicate key \"x\" (first defined on line 1)"));
  EXPECT_TRUE(contains(error_of("a.b = 1\na.b = 2\n"), "job.toml:2: duplicate key \"a.b\" (first defined on line 1)"));
}

TEST(Toml, RejectsAKeyRedefinedAsATableOrValue) {
  EXPECT_TRUE(contains(error_of("[run]\nmodel.x = 1\nmodel = 3\n"),
                       "job.toml:3: \"model\" is already a table defined on line 2"));
  EXPECT_TRUE(
      contains(error_of("[a.model]\n[a]\nmodel = 1\n"), "job.toml:3: \"model\" is already a table defined on line 1"));
  EXPECT_TRUE(contains(error_of("chips = 4\nchips.max = 5\n"),
                       "job.toml:2: \"chips\" is already an integer defined on line 1"));
  EXPECT_TRUE(
      contains(error_of("model = 'x'\n[model.sub]\n"), "job.toml:2: \"model\" is already a string defined on line 1"));
  EXPECT_TRUE(contains(error_of("list = [1]\n[list]\n"), "job.toml:2: \"list\" is already an array defined on line 1"));
}

TEST(Toml, RejectsARepeatedOrConflictingTableHeader) {
  EXPECT_TRUE(
      contains(error_of("[model]\nx = 1\n[run]\n[model]\n"), "job.toml:4: table [model] is already defined on line 1"));
  EXPECT_TRUE(contains(error_of("[a.b]\n[a]\n[a.b]\n"), "job.toml:3: table [a.b] is already defined on line 1"));
  EXPECT_TRUE(contains(error_of("[fruit]\napple.color = 1\n[fruit.apple]\n"),
                       "job.toml:3: table [fruit.apple] is already defined by dotted keys on line 2"));
  EXPECT_TRUE(contains(error_of("[a.b.c]\nz = 9\n[a]\nb.c.t = 1\n"),
                       "job.toml:4: dotted key \"b.c.t\" cannot add to table \"b\", which a header defines on line 1"));
  EXPECT_TRUE(contains(error_of("p = { x = 1 }\n[p]\n"),
                       "job.toml:2: table [p] cannot add to inline table \"p\" defined on line 1"));
  EXPECT_TRUE(contains(error_of("p = { x = 1 }\n[p.q]\n"), "job.toml:2: table [p.q] cannot add to inline table \"p\""));
  EXPECT_TRUE(contains(error_of("p = { x = 1 }\np.y = 2\n"),
                       "job.toml:2: key \"p.y\" cannot add to inline table \"p\" defined on line 1"));
  EXPECT_TRUE(contains(error_of("p = { a = { b = 1 }, a.c = 2 }\n"),
                       "job.toml:1: key \"a.c\" cannot add to inline table \"a\""));
}

TEST(Toml, RejectsAMissingEqualsSign) {
  EXPECT_TRUE(
      contains(error_of("[sweep]\n\n\nchips\n"), "job.toml:4: expected '=' after key \"chips\", found end of line"));
  EXPECT_TRUE(contains(error_of("chips : 4"), "job.toml:1: expected '=' after key \"chips\", found \":\""));
  EXPECT_TRUE(contains(error_of("a.b"), "job.toml:1: expected '=' after key \"a.b\", found end of file"));
}

TEST(Toml, RejectsMissingKeysAndValues) {
  EXPECT_TRUE(contains(error_of("= 1\n"), "job.toml:1: expected a key, found \"=\""));
  EXPECT_TRUE(contains(error_of("a. = 1\n"), "job.toml:1: expected a key, found \"=\""));
  EXPECT_TRUE(
      contains(error_of("x = 1\nname =\n"), "job.toml:2: expected a value for key \"name\", found end of line"));
  EXPECT_TRUE(contains(error_of("name = # nothing"), "job.toml:1: expected a value for key \"name\", found \"#\""));
  EXPECT_TRUE(contains(error_of("name = llama\n"), "job.toml:1: invalid value \"llama\" for key \"name\""));
  EXPECT_TRUE(contains(error_of("[]\n"), "job.toml:1: expected a key, found \"]\""));
  EXPECT_TRUE(contains(error_of("[a\n"), "job.toml:1: expected ']' to close table header [a], found end of line"));
}

TEST(Toml, RejectsTrailingContent) {
  EXPECT_TRUE(
      contains(error_of("a = 1 2\n"), "job.toml:1: expected end of line after the value of key \"a\", found \"2\""));
  EXPECT_TRUE(
      contains(error_of("\n[run] x = 1\n"), "job.toml:2: expected end of line after table header [run], found \"x\""));
  EXPECT_TRUE(contains(error_of("a = 1 b = 2\n"), "after the value of key \"a\""));
}

TEST(Toml, RejectsUnsupportedConstructs) {
  EXPECT_TRUE(contains(error_of("\n\n\n\n\n\n\n\nnotes = \"\"\"\nmany lines\n\"\"\"\n"),
                       "job.toml:9: multi-line strings are not supported for key \"notes\""));
  EXPECT_TRUE(
      contains(error_of("notes = '''x'''"), "job.toml:1: multi-line strings are not supported for key \"notes\""));
  EXPECT_TRUE(contains(error_of("x = 1\n[[servers]]\n"), "job.toml:2: arrays of tables ([[...]]) are not supported"));
  EXPECT_TRUE(
      contains(error_of("mask = 0xff\n"), "job.toml:1: hexadecimal integers are not supported for key \"mask\""));
  EXPECT_TRUE(contains(error_of("mode = 0o755\n"), "job.toml:1: octal integers are not supported for key \"mode\""));
  EXPECT_TRUE(contains(error_of("bits = 0b1010\n"), "job.toml:1: binary integers are not supported for key \"bits\""));
  EXPECT_TRUE(contains(error_of("when = 1979-05-27T07:32:00Z\n"),
                       "job.toml:1: dates and times are not supported for key \"when\""));
  EXPECT_TRUE(contains(error_of("day = 1979-05-27\n"), "dates and times are not supported for key \"day\""));
  EXPECT_TRUE(contains(error_of("at = 07:32:00\n"), "dates and times are not supported for key \"at\""));
}

TEST(Toml, RejectsIntegersOutOfRange) {
  EXPECT_TRUE(contains(error_of("\n\n\n\nchips = 99999999999999999999\n"),
                       "job.toml:5: integer 99999999999999999999 is out of range"));
  EXPECT_TRUE(contains(error_of("chips = 99999999999999999999\n"), "for key \"chips\""));
  EXPECT_TRUE(contains(error_of("n = -9223372036854775809"), "integer -9223372036854775809 is out of range"));
  EXPECT_TRUE(contains(error_of("n = 9_223_372_036_854_775_808"), "integer 9_223_372_036_854_775_808 is out of range"));
  EXPECT_TRUE(contains(error_of("x = 1e999\n"), "job.toml:1: float 1e999 is out of range for key \"x\""));
}

TEST(Toml, RejectsMalformedNumbers) {
  for (const std::string bad : {"1__0", "_1",    "1_",    "1.",  ".5",  "1e",   "1e+",  "1.e5",     "+",   "-",
                                "1x",   "1.2.3", "1e5.0", "--1", "+-1", "1_.5", "1._5", "infinity", "NaN", "True"}) {
    EXPECT_TRUE(
        contains(error_of("\nkey = " + bad + "\n"), "job.toml:2: invalid value \"" + bad + "\" for key \"key\""))
        << bad;
  }
  EXPECT_TRUE(contains(error_of("n = 0123\n"), "job.toml:1: leading zeros are not allowed in \"0123\" for key \"n\""));
  EXPECT_TRUE(contains(error_of("n = -01.5\n"), "leading zeros are not allowed in \"-01.5\""));
  EXPECT_TRUE(contains(error_of("n = 0_0\n"), "leading zeros are not allowed"));
}

TEST(Toml, RejectsUnterminatedStrings) {
  EXPECT_TRUE(contains(error_of("a = 1\n\nname = \"llama\n"), "job.toml:3: unterminated string for key \"name\""));
  EXPECT_TRUE(contains(error_of("name = 'llama\r\nx = 1"),
                       "job.toml:1: unterminated string for key \"name\" (expected ' before the end of the line)"));
  EXPECT_TRUE(contains(error_of("name = \"llama"), "job.toml:1: unterminated string for key \"name\""));
  EXPECT_TRUE(contains(error_of("name = \"llama\\"), "job.toml:1: unterminated string for key \"name\""));
  EXPECT_TRUE(contains(error_of("\"key = 1\n"), "job.toml:1: unterminated string in a key"));
  EXPECT_TRUE(contains(error_of("['table\n"), "job.toml:1: unterminated string in a table header"));
}

TEST(Toml, RejectsBadEscapes) {
  EXPECT_TRUE(contains(error_of("\ns = \"a\\qb\"\n"), "job.toml:2: invalid escape \\q in string for key \"s\""));
  EXPECT_TRUE(
      contains(error_of("s = \"a\\\nb\"\n"), "job.toml:1: unterminated string for key \"s\" (expected \" before"));
  EXPECT_TRUE(contains(error_of("s = \"a\\\x01\"\n"), "job.toml:1: invalid escape \\\\x01 in string for key \"s\""));
  EXPECT_TRUE(contains(error_of("s = \"\\u12\"\n"), "job.toml:1: expected 4 hex digits after \\u for key \"s\""));
  EXPECT_TRUE(contains(error_of("s = \"\\U0001F6\""), "job.toml:1: expected 8 hex digits after \\U for key \"s\""));
  EXPECT_TRUE(contains(
      error_of("s = \"\\uD800\"\n"),
      "job.toml:1: escape U+D800 is not a Unicode scalar value (a surrogate or above U+10FFFF) for key \"s\""));
  EXPECT_TRUE(contains(error_of("s = \"\\U00110000\"\n"), "escape U+110000 is not a Unicode scalar value"));
  EXPECT_TRUE(contains(error_of("s = \"\\UFFFFFFFF\"\n"), "escape U+FFFFFFFF is not a Unicode scalar value"));
}

TEST(Toml, RejectsControlCharacters) {
  EXPECT_TRUE(contains(error_of("s = \"a\x01z\"\n"), "job.toml:1: control character \\x01 in string for key \"s\""));
  EXPECT_TRUE(contains(error_of("\ns = 'a\x7fz'\n"), "job.toml:2: control character \\x7F in string for key \"s\""));
  EXPECT_TRUE(contains(error_of(std::string("s = \"a\0z\"\n", 10)), "control character \\x00 in string"));
  EXPECT_TRUE(contains(error_of("s = \"a\rz\"\n"), "control character \\x0D in string"));
  EXPECT_TRUE(contains(error_of("a = 1 # bell \x07\n"), "job.toml:1: control character \\x07 in comment"));
  EXPECT_TRUE(contains(error_of(std::string("a = 1\0", 6)),
                       "job.toml:1: expected end of line after the value of key \"a\", found \"\\x00\""));
  EXPECT_TRUE(contains(error_of("a = 1\rb = 2\n"), "found \"\\x0D\""));
}

TEST(Toml, RejectsMalformedInlineTablesAndArrays) {
  EXPECT_TRUE(contains(error_of("set = { a = 1,\n b = 2 }\n"),
                       "job.toml:1: the inline table for key \"set\" must end with '}' on the line where it starts"));
  EXPECT_TRUE(contains(error_of("set = {\n}"), "job.toml:1: the inline table for key \"set\" must end with '}'"));
  EXPECT_TRUE(contains(error_of("set = { a = 1, }\n"),
                       "job.toml:1: trailing comma in the inline table for key \"set\" (TOML does not allow one)"));
  EXPECT_TRUE(contains(error_of("set = { a = 1 b = 2 }\n"),
                       "job.toml:1: expected ',' or '}' in the inline table for key \"set\", found \"b\""));
  EXPECT_TRUE(contains(error_of("set = { a = 1"),
                       "expected ',' or '}' in the inline table for key \"set\", found end of file"));
  EXPECT_TRUE(
      contains(error_of("chips = [1 2]\n"),
               "job.toml:1: expected ',' or ']' in the array for key \"chips\" (opened on line 1), found \"2\""));
  EXPECT_TRUE(
      contains(error_of("chips = [1,\n 2,\n"), "job.toml:3: expected a value for key \"chips\", found end of file"));
  EXPECT_TRUE(
      contains(error_of("chips = [1,\n 2\n"),
               "job.toml:3: expected ',' or ']' in the array for key \"chips\" (opened on line 1), found end of file"));
  EXPECT_TRUE(contains(error_of("chips = [,]\n"), "job.toml:1: expected a value for key \"chips\", found \",\""));
}

TEST(Toml, QuotesInputInMessagesSafelyAndBriefly) {
  const std::string message = error_of("\"a\\nb\" = 1\n\"a\\nb\" = 2\n");
  EXPECT_TRUE(contains(message, "job.toml:2: duplicate key \"a\\x0Ab\""));
  const std::string long_key(200, 'k');
  const std::string long_message = error_of(long_key + "\n");
  EXPECT_TRUE(contains(long_message, "\"" + std::string(40, 'k') + "...\""));
  EXPECT_LT(long_message.size(), 120U);
  EXPECT_TRUE(contains(error_of("\"q\\\"\" = \"\xff\"\n\"q\\\"\" = 1"), "duplicate key \"q\\\"\""));
  EXPECT_TRUE(contains(error_of("a = \xff\n"), "expected a value for key \"a\", found \"\\xFF\""));
}

TEST(Toml, ErrorsCarryTheConfigExitCode) {
  try {
    parse("a =", "job.toml");
    FAIL() << "no error";
  } catch (const lpurt::Error& e) {
    EXPECT_EQ(e.code(), lpurt::ExitCode::config);
  }
}
