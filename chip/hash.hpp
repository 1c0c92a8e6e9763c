#pragma once
/// \file
/// Integer hashing shared by every module (chip is the bottom library): the synthetic weights, the
/// injected link-fault draws and the transfer checksums all mix with the same function.

#include <cstdint>

namespace lpurt::chip {

/// splitmix64's finalizer: a well-mixed 64-bit function of its input, so a counter-based generator
/// (value i of a tensor never depends on how the tensor is sliced) and a checksum round both use it.
inline uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace lpurt::chip
