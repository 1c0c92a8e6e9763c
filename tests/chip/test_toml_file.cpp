// The TOML reading layer of job and system files: errors name the line and column (exit code 3), keys
// come back in file order, and dotted names survive TOML's nesting.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "chip/error.hpp"
#include "chip/toml_file.hpp"

namespace lpurt::chip {
namespace {

// The message of the InputError that parsing `text` as "job.toml" throws, checked to be one printable line.
std::string error_of(const std::string& text) {
  try {
    parse_toml(text, "job.toml");
  } catch (const InputError& e) {
    const std::string message = e.what();
    for (const char c : message) {
      const auto byte = static_cast<unsigned char>(c);
      EXPECT_TRUE(byte >= 0x20 && byte < 0x7f) << "unprintable byte " << int{byte} << " in: " << message;
    }
    EXPECT_EQ(e.code(), ExitCode::input);
    return message;
  }
  ADD_FAILURE() << "no InputError for: " << text.substr(0, 200);
  return "";
}

testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return testing::AssertionSuccess();
  return testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

std::vector<std::string> names_of(const std::vector<TomlEntry>& entries) {
  std::vector<std::string> names;
  for (const auto& entry : entries) names.push_back(entry.name);
  return names;
}

TEST(TomlFile, KeepsKeysInFileOrder) {
  const toml::table root = parse_toml("zeta = 1\nalpha = 2\nmid = 3\n[b]\n[a]\n", "job.toml");
  EXPECT_EQ(names_of(entries_in_file_order(root)), (std::vector<std::string>{"zeta", "alpha", "mid", "b", "a"}));
  const toml::table sweep = parse_toml("[sweep]\nz = [1, 2]\na = [3]\nm = { from = 1, to = 2, step = 1 }\n", "job.toml");
  EXPECT_EQ(names_of(entries_in_file_order(*sweep["sweep"].as_table())), (std::vector<std::string>{"z", "a", "m"}));
}

TEST(TomlFile, FlattensNestedTablesIntoDottedNames) {
  const toml::table root = parse_toml(
      "clock_hz = 1e9\nchip_speed_factor.3 = 0.5\n\"link_bandwidth_factor.0-1\" = 0.25\n"
      "[link_bandwidth_factor]\n1-2 = 2.0\n",
      "sys.toml");
  EXPECT_EQ(names_of(flatten_in_file_order(root)),
            (std::vector<std::string>{"clock_hz", "chip_speed_factor.3", "link_bandwidth_factor.0-1",
                                      "link_bandwidth_factor.1-2"}));
  const toml::table job = parse_toml("range = { from = 1, to = 4 }\na.b = 1\n", "job.toml");
  const auto kept = flatten_in_file_order(job, [](const std::string& name) { return name == "range"; });
  EXPECT_EQ(names_of(kept), (std::vector<std::string>{"range", "a.b"}));
  EXPECT_TRUE(kept[0].value->is_table());
}

TEST(TomlFile, ValuesKnowTheirLineAndType) {
  const toml::table root =
      parse_toml("\n[run]\nchips = 4\nlist = [1,\n  2.5]\ns = 'x'\nb = true\nd = 1979-05-27\nt = {}\n", "job.toml");
  const toml::table& run = *root["run"].as_table();
  EXPECT_EQ(toml_origin(*run.get("chips"), "job.toml"), "job.toml:3");
  EXPECT_EQ(toml_origin(*run.get("list")->as_array()->get(1), "job.toml"), "job.toml:5");
  EXPECT_EQ(toml_origin(run, "job.toml"), "job.toml:2");
  EXPECT_EQ(toml_type_name(*run.get("chips")), "integer");
  EXPECT_EQ(toml_type_name(*run.get("list")), "array");
  EXPECT_EQ(toml_type_name(*run.get("list")->as_array()->get(1)), "float");
  EXPECT_EQ(toml_type_name(*run.get("s")), "string");
  EXPECT_EQ(toml_type_name(*run.get("b")), "boolean");
  EXPECT_EQ(toml_type_name(*run.get("d")), "date");
  EXPECT_EQ(toml_type_name(*run.get("t")), "table");
  EXPECT_EQ(toml_origin(*parse_toml("[a.b]\n", "job.toml").get("a"), "job.toml").rfind("job.toml", 0), 0U);
}

TEST(TomlFile, ReadsIntegersToTheirLimitsAndRefusesBeyond) {
  const toml::table root = parse_toml("e = 9223372036854775807\nf = -9223372036854775808\ng = 1_000\n", "job.toml");
  EXPECT_EQ(root["e"].value<int64_t>(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(root["f"].value<int64_t>(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(root["g"].value<int64_t>(), 1000);
  EXPECT_TRUE(contains(error_of("\n\n\n\nchips = 99999999999999999999\n"), "job.toml:5:"));
  EXPECT_TRUE(contains(error_of("chips = 99999999999999999999\n"), "not representable in 64 bits"));
  EXPECT_TRUE(contains(error_of("x = 1e999\n"), "job.toml:1:"));
}

TEST(TomlFile, SyntaxErrorsNameLineColumnAndTheLine) {
  EXPECT_TRUE(contains(error_of("clock_hz = 1e9\nthis line has no equals sign\n"),
                       "job.toml:2:6: Error while parsing key-value pair: expected '=', saw 'l' "
                       "(in \"this line has no equals sign\")"));
  EXPECT_TRUE(contains(error_of("[run]\nchips = [4\n"), "job.toml:2:"));
  EXPECT_TRUE(contains(error_of("a = 1\r\nb = \r\n"), "job.toml:2:"));
  EXPECT_TRUE(contains(error_of("name = \"llama\n"), "job.toml:1:"));
  EXPECT_TRUE(contains(error_of("a = 1 2\n"), "job.toml:1:"));
  const std::string long_line = error_of("x = " + std::string(200, 'k') + "\n");
  EXPECT_TRUE(contains(long_line, "...\")"));
  EXPECT_LT(long_line.size(), 250U);
}

TEST(TomlFile, RefusesDuplicateKeysAndTables) {
  EXPECT_TRUE(contains(error_of("[sweep]\n\nchips = 1\nx = 2\n\n\nchips = [2]\n"), "job.toml:7:"));
  EXPECT_TRUE(contains(error_of("a = 1\n\"a\" = 2\n"), "job.toml:2:"));
  EXPECT_TRUE(contains(error_of("[model]\nx = 1\n[run]\n[model]\n"), "job.toml:4:"));
  EXPECT_TRUE(contains(error_of("chips = 4\nchips.max = 5\n"), "job.toml:2:"));
}

TEST(TomlFile, SkipsAByteOrderMarkAndEchoesOtherBytesSafely) {
  EXPECT_EQ(parse_toml("\xEF\xBB\xBFx = 1\n", "job.toml")["x"].value<int64_t>(), 1);
  EXPECT_TRUE(contains(error_of("a = \xff\n"), "job.toml:1:"));
  EXPECT_TRUE(contains(error_of("s = \"a\x01z\"\n"), "job.toml:1:"));
  EXPECT_TRUE(contains(error_of(std::string("a = 1\0", 6)), "job.toml:1:"));
}

TEST(TomlFile, RefusesDeepKeysAndValuesWithoutCrashing) {
  std::string parts = "a";
  for (int i = 1; i < max_toml_key_parts; ++i) parts += ".a";
  EXPECT_NO_THROW(parse_toml("[" + parts + "]\n" + parts + " = 1\n", "job.toml"));
  EXPECT_TRUE(contains(error_of("\n" + parts + ".a = 1\n"), "job.toml:2:"));
  EXPECT_TRUE(contains(error_of("\n" + parts + ".a = 1\n"), "more than 64 dot-separated parts"));
  // Far deeper than the stack could hold if toml++ saw it (it recurses once per part).
  std::string many = "a";
  for (int i = 0; i < 200000; ++i) many += " . 'a'";
  EXPECT_TRUE(contains(error_of("[" + many + "]\n"), "job.toml:1:"));
  EXPECT_TRUE(contains(error_of("x = { " + many + " = 1 }\n"), "dot-separated parts"));
  EXPECT_TRUE(contains(error_of("x = " + std::string(100000, '[')), "job.toml:1:"));
  // Dots inside strings and comments are not key parts.
  EXPECT_NO_THROW(parse_toml("x = \"" + many + "\" # " + many + "\ny = '''\n" + many + "'''\nz = 1.5\n", "job.toml"));
}

}  // namespace
}  // namespace lpurt::chip
