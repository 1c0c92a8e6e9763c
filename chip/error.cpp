#include "chip/error.hpp"

#include <cstdio>
#include <cstdlib>

namespace lpurt {

std::string format_number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

void detail_assert_fail(const char* expression, const char* file, int line) {
  std::fprintf(stderr, "lpurt: internal error: LPURT_ASSERT(%s) failed at %s:%d\n", expression, file, line);
  std::abort();
}

}  // namespace lpurt
