#pragma once
/// \file
/// The limits of a layout request, checked before any work that scales with its values: the planner
/// enumerates layouts per chip, `run` builds one prompt per sequence, so an absurd --chips or --batch
/// must fail at once with one line, never loop or exhaust memory first.
///
/// Example usage:
/// \code
///   lpurt::partition::check_request(cfg, hw, request);  // throws PlanError or CapacityError
/// \endcode

#include <cstdint>

#include "chip/hardware.hpp"
#include "chip/model_config.hpp"
#include "partition/plan.hpp"

namespace lpurt::partition {

/// The most chips a system of `topology` ("dragonfly" or "chain") holds: Topology::max_dragonfly_chips
/// or Topology::max_chain_chips.
int64_t max_chips(const std::string& topology);

/// The most sequences whose KV cache could fit the SRAM of `n_chips` chips at `context` positions (an
/// upper bound: weights and activations are not counted).
int64_t max_batch_bound(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, int64_t n_chips, int64_t context);

/// Throws PlanError for a value out of range: n_chips outside 1 .. max_chips(topology), a negative tp,
/// pp or replicas (0: the planner's choice) or one above n_chips, a context outside 0 .. max_seq_len,
/// block_tokens below 1 or making a transfer larger than one MPI message; CapacityError for a batch
/// above max_batch_bound (and above 1). make_plan calls it first; commands call it before building
/// per-sequence inputs, so both give the same message.
void check_request(const chip::ModelConfig& cfg, const chip::ChipSpec& hw, const PlanRequest& request);

}  // namespace lpurt::partition
