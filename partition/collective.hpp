#pragma once
/// \file
/// How a tensor-parallel group runs its collectives, and which way wins for a given message.
///
/// A group of `members` chips (member t = tp rank t) all-reduces a flat array of `elements` values in
/// steps. Members are numbered in mixed radix: step s groups the members that differ only in digit s
/// (radix r_s). In the reduce-scatter, step s splits the range a member owns after step s - 1 into r_s
/// parts, one per member of its step-s group, and each member sums its part over the group; the
/// all-gather then runs the steps in reverse, each member sending its range to its group. Every element
/// is summed exactly once per step, so int32 partial sums (exact in any order) and float slots with one
/// holder (-0.0 elsewhere) give the same bits whatever the algorithm.
///
/// - `direct`: one step over the whole group (every member sends every other its share): few hops'
///   latency, but at tp beyond a node most transfers are routed over the few inter-node links.
/// - `two_level`: for groups of whole nodes, step 0 within each node over the K8 links (radix 8), step 1
///   among the chips of the same index in the nodes, each over its own inter-node links: the message is
///   striped over the group's parallel links and paths, as the compiler spreads a tensor over paths
///   (lpu-v1-facts §2.2, "deterministic load balancing" [S]). SHIP chooses its AllReduce algorithm per
///   tensor size (§2.4: RedBcast, TiledRedBcast, PAARD [S]); lpurt chooses among these two by modelled
///   time.
///
/// The amax all-gather (a max over the group, exact in any order) uses the same steps: step s sends the
/// whole running max to the step-s group and takes the max.
///
/// The choice is by modelled time: each candidate is expanded into a standalone program of the group's
/// transfers and reductions (build_collective_program, the schedule's own expansion) and its timeline
/// is solved on the topology with the hardware's link bandwidth and hop latency. It is therefore a pure
/// function of the group's chips, the message, the topology and the hardware.
///
/// Example usage:
/// \code
///   Collective c = choose_collective(chips, elements, Combine::sum, topology, hw);
///   for (int s = 0; s < c.steps; ++s) ... c.begin(s, member), c.group_size(s), c.peer(s, member, q) ...
/// \endcode

#include <array>
#include <cstdint>
#include <vector>

#include "chip/hardware.hpp"
#include "partition/topology.hpp"

namespace lpurt::partition {

enum class Algorithm : uint8_t { direct, two_level };
const char* algorithm_name(Algorithm a);

/// What the collective computes: a sum reduce-scatter + all-gather of an array, or the all-gathered max
/// of every member's whole array (the amax).
enum class Combine : uint8_t { sum, max };

struct Collective {
  static constexpr int max_steps = 2;
  Algorithm algorithm = Algorithm::direct;
  int64_t elements = 0;
  int64_t members = 1;
  int steps = 1;
  std::array<int64_t, max_steps> radix{1, 1};  ///< [steps] members of a step's group; their product is members

  /// The one-step collective over all members (today's reduce-scatter then all-gather).
  static Collective direct(int64_t elements, int64_t members);
  /// Step 0 within groups of `local` consecutive members (a node), step 1 across them.
  static Collective two_level(int64_t elements, int64_t members, int64_t local);

  int64_t group_size(int step) const { return radix[static_cast<std::size_t>(step)]; }
  /// Where `member` sits in its step-`step` group, 0 .. group_size - 1 (its digit `step`).
  int64_t position(int step, int64_t member) const { return member / stride(step) % group_size(step); }
  /// The member at `position` of `member`'s step-`step` group.
  int64_t peer(int step, int64_t member, int64_t position_in_group) const {
    return member + (position_in_group - position(step, member)) * stride(step);
  }
  /// Elements [begin, end) that `member` holds summed over its groups of steps 0 .. step after the
  /// reduce-scatter's step `step` (sum only).
  int64_t begin(int step, int64_t member) const { return bounds(step, member)[0]; }
  int64_t end(int step, int64_t member) const { return bounds(step, member)[1]; }
  /// The largest range a member holds after step `step`: ceil(elements / (r_0 ... r_step)).
  int64_t max_share(int step) const;
  /// Elements a member receives into in reduce-scatter step `step`: one max_share(step) slot per group
  /// position (the receive buffer's layout, [group_size(step), max_share(step)]).
  int64_t receive_elements(int step) const { return group_size(step) * max_share(step); }

 private:
  int64_t stride(int step) const {
    int64_t s = 1;
    for (int k = 0; k < step; ++k) s *= radix[static_cast<std::size_t>(k)];
    return s;
  }
  std::array<int64_t, 2> bounds(int step, int64_t member) const;
};

/// An upper bound on Collective::receive_elements over every algorithm and step for an array of at most
/// `elements` over `members`: the receive buffers the engine allocates once.
inline int64_t receive_bound_elements(int64_t elements, int64_t members) { return elements + members; }

/// The algorithms `chips` (member t on chips[t]) can use: direct always; two_level when the group is at
/// least two whole nodes with member t on chip index t % 8 of the group's (t / 8)-th node.
std::vector<Collective> candidate_collectives(const std::vector<int64_t>& chips, int64_t elements, const Topology& topology);

/// Modelled cycles of the collective alone on an idle network (its standalone program's makespan).
int64_t collective_cycles(const std::vector<int64_t>& chips, const Collective& collective, Combine combine,
                          const Topology& topology, const chip::ChipSpec& hardware);

/// The candidate with the fewest modelled cycles; ties to the earlier candidate (direct first).
Collective choose_collective(const std::vector<int64_t>& chips, int64_t elements, Combine combine,
                             const Topology& topology, const chip::ChipSpec& hardware);

/// One point of a standalone all-reduce in lpurt's model (the validation of SHIP's 64-chip figure).
struct AllReducePoint {
  int64_t bytes = 0;              ///< the array each member contributes, on the links
  int64_t members = 0;
  Algorithm algorithm = Algorithm::direct;  ///< the one choose_collective picks
  int64_t cycles = 0;             ///< modelled makespan on an idle network
  double seconds = 0;
  /// The usual all-reduce bus bandwidth, 2 (p - 1) / p x bytes / seconds: what each member's links
  /// carry per second, the same for any algorithm that moves the minimum.
  double bus_bytes_per_s = 0;
  /// bus_bytes_per_s over the same model's at `reference_bytes`, where hop latencies no longer count:
  /// the share of the attainable bandwidth a message of this size reaches (SHIP Fig. 6a's reading).
  double efficiency = 0;
};

/// A message so large that hop latencies are negligible in its all-reduce: the efficiency reference.
constexpr int64_t all_reduce_reference_bytes = int64_t{64} << 20;

/// The all-reduce of `bytes` over chips 0 .. members - 1 of `topology` (the chosen algorithm, its
/// standalone program's timeline).
AllReducePoint model_all_reduce(int64_t members, int64_t bytes, const Topology& topology, const chip::ChipSpec& hardware);

}  // namespace lpurt::partition
