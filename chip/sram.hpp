#pragma once
/// \file
/// SRAM accounting of one chip: everything a chip holds lives in its SRAM (no DRAM, no caches), so the
/// sum of weights, KV cache, activations and the program reserve must fit `ChipSpec::sram_bytes`.

#include <cstdint>
#include <string>

#include "chip/hardware.hpp"

namespace lpurt::chip {

struct SramUsage {
  int64_t weight_bytes = 0;      ///< int8 matrices, float32 scales and vectors held by the chip
  int64_t kv_cache_bytes = 0;    ///< K and V of its layers and KV heads, for the context times the batch
  int64_t activation_bytes = 0;  ///< working buffers of the largest token block
  int64_t program_bytes = 0;     ///< ChipSpec::program_reserve_bytes

  int64_t total_bytes() const { return weight_bytes + kv_cache_bytes + activation_bytes + program_bytes; }
  /// One line: "12.3 MB weights + 4.5 MB KV + ... = 20.1 MB of 230.7 MB".
  std::string describe(const ChipSpec& spec) const;
};

/// Throws CapacityError if `usage` exceeds the chip's SRAM; the message names `where` (e.g. "chip 3"),
/// every component, by how many bytes it is over, and ends with `advice` (e.g. "; try more chips").
void check_fits(const SramUsage& usage, const ChipSpec& spec, const std::string& where, const std::string& advice = {});

/// "230.7 MB" style formatting (decimal units, as the reference sheet quotes SRAM).
std::string format_bytes(double bytes);

}  // namespace lpurt::chip
