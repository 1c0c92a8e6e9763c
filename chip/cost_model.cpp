#include "chip/cost_model.hpp"

#include <algorithm>

namespace lpurt::chip {

int64_t CostModel::matmul_cycles(int64_t rows, int64_t cols, int64_t n_tokens) const {
  if (rows == 0 || cols == 0 || n_tokens == 0) return 0;
  // Weights travel as stream vectors: each of the matrix's rows (one output's cols int8 weights) fills
  // whole vectors, the last one padded. The MXM multiplies whole 320 x 320 tiles: a plane takes one
  // token's vector through one tile per cycle.
  const int64_t vector = spec_.vector_bytes;
  const int64_t vectors_per_row = ceil_div(cols, vector);
  const int64_t stream = ceil_div(rows * vectors_per_row * vector, spec_.weight_path_bytes_per_cycle());
  const int64_t tile_macs = vector * vector;
  const int64_t tiles = ceil_div(rows, vector) * vectors_per_row;
  const int64_t compute = ceil_div(tiles * tile_macs * n_tokens, spec_.mxm_macs_per_cycle);
  return std::max(stream, compute) + spec_.op_latency_cycles;
}

int64_t CostModel::vector_cycles(int64_t n_ops) const {
  if (n_ops == 0) return 0;
  return ceil_div(n_ops, spec_.vector_ops_per_cycle) + spec_.op_latency_cycles;
}

int64_t CostModel::attention_cycles(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                    int64_t first_position, int64_t n_tokens) const {
  if (n_heads == 0 || n_tokens == 0) return 0;
  // The block reads each cached K and V value of its KV heads once (up to its last token's context);
  // every query token then attends to its own causal prefix.
  const int64_t last_context = first_position + n_tokens;
  const int64_t kv_bytes = 2 * n_kv_heads * head_dim * last_context * spec_.kv_bytes_per_value;
  const int64_t attended_positions = n_tokens * first_position + n_tokens * (n_tokens + 1) / 2;
  // Per query head and attended position: a head_dim dot product and a head_dim axpy (2 ops per element),
  // plus scale, exp and sum.
  const int64_t ops = n_heads * attended_positions * (4 * head_dim + 3);
  const int64_t stream = ceil_div(kv_bytes, spec_.stream_bytes_per_cycle);
  return std::max(stream, ceil_div(ops, spec_.vector_ops_per_cycle)) + spec_.op_latency_cycles;
}

}  // namespace lpurt::chip
