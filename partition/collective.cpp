#include "partition/collective.hpp"

#include "chip/error.hpp"
#include "partition/plan.hpp"
#include "partition/schedule.hpp"

namespace lpurt::partition {

const char* algorithm_name(Algorithm a) {
  switch (a) {
    case Algorithm::direct: return "direct";
    case Algorithm::two_level: return "two-level";
  }
  return "?";
}

Collective Collective::direct(int64_t elements, int64_t members) {
  Collective c;
  c.elements = elements;
  c.members = members;
  c.radix = {members, 1};
  return c;
}

Collective Collective::two_level(int64_t elements, int64_t members, int64_t local) {
  LPURT_ASSERT(local > 1 && members > local && members % local == 0);
  Collective c;
  c.algorithm = Algorithm::two_level;
  c.elements = elements;
  c.members = members;
  c.steps = 2;
  c.radix = {local, members / local};
  return c;
}

int64_t Collective::max_share(int step) const {
  const int64_t parts = stride(step) * group_size(step);
  return (elements + parts - 1) / parts;
}

std::array<int64_t, 2> Collective::bounds(int step, int64_t member) const {
  int64_t b = 0, e = elements;
  for (int k = 0; k <= step; ++k) {
    const int64_t size = e - b, r = group_size(k), d = position(k, member);
    e = b + size * (d + 1) / r;
    b = b + size * d / r;
  }
  return {b, e};
}

std::vector<Collective> candidate_collectives(const std::vector<int64_t>& chips, int64_t elements, const Topology& topology) {
  const auto members = static_cast<int64_t>(chips.size());
  std::vector<Collective> out{Collective::direct(elements, members)};
  const int64_t local = Topology::chips_per_node;
  if (members <= local || members % local != 0) return out;
  const int64_t first_node = topology.node_of(chips.front());
  for (int64_t t = 0; t < members; ++t) {
    const int64_t chip = chips[static_cast<std::size_t>(t)];
    if (topology.node_of(chip) != first_node + t / local || chip % local != t % local) return out;
  }
  out.push_back(Collective::two_level(elements, members, local));
  return out;
}

int64_t collective_cycles(const std::vector<int64_t>& chips, const Collective& collective, Combine combine,
                          const Topology& topology, const chip::ChipSpec& hardware) {
  // The timeline of transfers and reductions reads only the hardware (the reductions' sizes are the
  // collective's own): a plan of no model stands for it.
  Plan bare;
  bare.hardware = hardware;
  const Program program = build_collective_program(chips, collective, combine, topology);
  return TimelineSolver(program, bare).at(0).makespan_cycles;
}

Collective choose_collective(const std::vector<int64_t>& chips, int64_t elements, Combine combine,
                             const Topology& topology, const chip::ChipSpec& hardware) {
  const std::vector<Collective> candidates = candidate_collectives(chips, elements, topology);
  if (candidates.size() == 1) return candidates.front();
  Collective best = candidates.front();
  int64_t best_cycles = collective_cycles(chips, best, combine, topology, hardware);
  for (std::size_t k = 1; k < candidates.size(); ++k) {
    const int64_t cycles = collective_cycles(chips, candidates[k], combine, topology, hardware);
    if (cycles < best_cycles) best = candidates[k], best_cycles = cycles;
  }
  return best;
}

namespace {

AllReducePoint all_reduce_point(const std::vector<int64_t>& chips, int64_t bytes, const Topology& topology,
                                const chip::ChipSpec& hardware) {
  AllReducePoint point;
  point.bytes = bytes;
  point.members = static_cast<int64_t>(chips.size());
  const int64_t elements = (bytes + hardware.activation_bytes_per_value - 1) / hardware.activation_bytes_per_value;
  const Collective c = choose_collective(chips, elements, Combine::sum, topology, hardware);
  point.algorithm = c.algorithm;
  point.cycles = collective_cycles(chips, c, Combine::sum, topology, hardware);
  point.seconds = static_cast<double>(point.cycles) / hardware.clock_hz;
  const double p = static_cast<double>(point.members);
  point.bus_bytes_per_s = 2 * (p - 1) / p * static_cast<double>(bytes) / point.seconds;
  return point;
}

}  // namespace

AllReducePoint model_all_reduce(int64_t members, int64_t bytes, const Topology& topology, const chip::ChipSpec& hardware) {
  if (members < 2 || members > topology.n_chips())
    throw chip::ConfigError("an all-reduce needs 2 .. " + std::to_string(topology.n_chips()) + " chips of the " +
                            topology_name(topology.kind()) + ", got " + std::to_string(members));
  if (bytes < 1) throw chip::ConfigError("an all-reduce needs at least 1 byte, got " + std::to_string(bytes));
  std::vector<int64_t> chips(static_cast<std::size_t>(members));
  for (int64_t t = 0; t < members; ++t) chips[static_cast<std::size_t>(t)] = t;
  AllReducePoint point = all_reduce_point(chips, bytes, topology, hardware);
  const AllReducePoint reference = all_reduce_point(chips, all_reduce_reference_bytes, topology, hardware);
  point.efficiency = point.bus_bytes_per_s / reference.bus_bytes_per_s;
  return point;
}

}  // namespace lpurt::partition
