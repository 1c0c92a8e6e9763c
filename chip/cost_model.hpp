#pragma once
/// \file
/// Cycles of every compute op on one chip, from the ChipSpec alone (no per-model constants).
/// - A matmul streams its int8 weights from SRAM once per token block and multiplies every token by them
///   on the MXM: cycles = max(weight bytes / weight-path bytes per cycle, MACs / MXM MACs per cycle), in the
///   hardware's units: weights move as 320-byte stream vectors, each row of a matrix filling whole vectors
///   (§1.2: every stream carries one maxVL vector per cycle), and the MXM's planes multiply whole 320 x 320
///   tiles (§1.1), so a matrix whose sides are not multiples of 320 costs its padded size.
/// - Vector work (norms, RoPE, softmax, SiLU, residual adds) runs on the VXM's ALUs.
/// - Attention streams the KV cache (kv_bytes_per_value per value) and does its dot products on the VXM.
/// - Every op adds the fixed pipeline latency `op_latency_cycles`.
/// Transfers between chips are costed in partition/ (they need the topology).

#include <cstdint>

#include "chip/hardware.hpp"

namespace lpurt::chip {

class CostModel {
 public:
  explicit CostModel(const ChipSpec& spec) : spec_(spec) {}

  /// int8 weight matrix [rows, cols] applied to n_tokens vectors.
  int64_t matmul_cycles(int64_t rows, int64_t cols, int64_t n_tokens) const;
  /// n_ops elementwise float operations.
  int64_t vector_cycles(int64_t n_ops) const;
  /// A block of query tokens at positions [first_position, first_position + n_tokens), n_heads query heads
  /// over n_kv_heads cached heads; token p attends to positions 0..p.
  int64_t attention_cycles(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t first_position,
                           int64_t n_tokens) const;
  double seconds(int64_t cycles) const { return static_cast<double>(cycles) / spec_.clock_hz; }
  const ChipSpec& spec() const { return spec_; }

 private:
  ChipSpec spec_;
};

/// ceil(a / b) for positive integers.
constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace lpurt::chip
