#include "chip/sram.hpp"

#include <cstdio>

#include "chip/error.hpp"

namespace lpurt::chip {

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  int u = 0;
  while (bytes >= 1000.0 && u < 5) bytes /= 1000.0, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

std::string SramUsage::describe(const ChipSpec& spec) const {
  return format_bytes(static_cast<double>(weight_bytes)) + " weights + " +
         format_bytes(static_cast<double>(kv_cache_bytes)) + " KV cache + " +
         format_bytes(static_cast<double>(activation_bytes)) + " activations + " +
         format_bytes(static_cast<double>(program_bytes)) + " program = " +
         format_bytes(static_cast<double>(total_bytes())) + " of " +
         format_bytes(static_cast<double>(spec.sram_bytes));
}

void check_fits(const SramUsage& usage, const ChipSpec& spec, const std::string& where, const std::string& advice) {
  if (usage.total_bytes() <= spec.sram_bytes) return;
  throw CapacityError(where + " does not fit in SRAM: " + usage.describe(spec) + ", over by " +
                      std::to_string(usage.total_bytes() - spec.sram_bytes) + " bytes" + advice);
}

}  // namespace lpurt::chip
