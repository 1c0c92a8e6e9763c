#include "partition/request.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "chip/sram.hpp"
#include "partition/topology.hpp"

namespace lpurt::partition {

int64_t max_chips(const std::string& topology) {
  return parse_topology(topology) == TopologyKind::dragonfly ? Topology::max_dragonfly_chips
                                                             : Topology::max_chain_chips;
}

int64_t max_batch_bound(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, int64_t n_chips, int64_t context) {
  // Doubles: the product of chips and SRAM can pass 2^63 (10,440 chips of up to 1e15 bytes).
  const double kv_bytes_per_sequence = 2.0 * static_cast<double>(cfg.n_layers) * static_cast<double>(cfg.kv_size()) *
                                       static_cast<double>(context) * static_cast<double>(hw.kv_bytes_per_value);
  const double usable = static_cast<double>(n_chips) * static_cast<double>(hw.sram_bytes - hw.program_reserve_bytes);
  return static_cast<int64_t>(std::min(std::floor(usable / kv_bytes_per_sequence), 0x1p62));
}

void check_request(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& r) {
  const int64_t chips_max = max_chips(hw.topology);
  if (r.n_chips < 1) throw PlanError("--chips must be at least 1 (got " + std::to_string(r.n_chips) + ")");
  if (r.n_chips > chips_max)
    throw PlanError("--chips " + std::to_string(r.n_chips) + " is more than a system holds: the " + hw.topology + " topology holds at most " + std::to_string(chips_max) + " chips" +
                    (hw.topology == "dragonfly" ? " (145 racks of 72)" : " (lpurt's limit, the largest dragonfly's)"));
  const auto check_split = [&](const char* flag, int64_t value) {
    if (value < 0 || value > r.n_chips)
      throw PlanError(std::string(flag) + " must be 1 .. --chips (" + std::to_string(r.n_chips) + "), got " +
                      std::to_string(value));
  };
  check_split("--tp", r.tp);
  check_split("--pp", r.pp);
  check_split("--replicas", r.replicas);
  if (r.max_tp < 0) throw PlanError("--max-tp must be at least 1 (got " + std::to_string(r.max_tp) + ")");
  if (r.context < 0) throw PlanError("--context must be at least 1 (got " + std::to_string(r.context) + ")");
  if (r.context > cfg.max_seq_len)
    throw PlanError("--context " + std::to_string(r.context) + " exceeds the model's max_seq_len " +
                    std::to_string(cfg.max_seq_len));
  const int64_t context = r.context > 0 ? r.context : cfg.max_seq_len;
  if (r.block_tokens < 1)
    throw PlanError("--block-tokens must be at least 1 (got " + std::to_string(r.block_tokens) + ")");
  // The largest transfer (a block's expert slots or activations) must fit one MPI message (int count); a
  // block is never longer than the context.
  const int64_t largest_transfer_bytes = std::min(r.block_tokens, context) * cfg.hidden_size * 4 *
                                         std::max<int64_t>(1, cfg.n_experts_per_token);
  if (largest_transfer_bytes > std::numeric_limits<int>::max())
    throw PlanError("--block-tokens " + std::to_string(r.block_tokens) + " makes a transfer of " +
                    std::to_string(largest_transfer_bytes) + " bytes, more than one MPI message holds (2 GiB)");
  if (r.batch < 1) throw PlanError("--batch must be at least 1 (got " + std::to_string(r.batch) + ")");
  const int64_t batch_max = max_batch_bound(cfg, hw, r.n_chips, context);
  // One sequence always goes to the planner, whose answer says how many chips it needs.
  if (r.batch > std::max<int64_t>(1, batch_max))
    throw chip::CapacityError("--batch " + std::to_string(r.batch) + " cannot fit: at context " +
                              std::to_string(context) + " the KV caches of at most " + std::to_string(batch_max) +
                              " sequences fit the SRAM of " + std::to_string(r.n_chips) + " chip" +
                              (r.n_chips == 1 ? "" : "s") + " (" +
                              chip::format_bytes(static_cast<double>(hw.sram_bytes)) +
                              " each; more chips or a shorter --context hold more)");
  if (r.prompt_tokens < 0 || r.output_tokens < 0)
    throw PlanError("prompt and output token counts must not be negative (got " + std::to_string(r.prompt_tokens) +
                    " and " + std::to_string(r.output_tokens) + ")");
}

}  // namespace lpurt::partition
