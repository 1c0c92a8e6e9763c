#pragma once
/// \file
/// The system's chip-to-chip network: chips in nodes of 8, fully connected by local links (K8), and
/// nodes joined by inter-node links in one of two shapes (lpu-v1-facts §2.2, §2.4):
///
/// - `dragonfly` (ISCA 2022): up to 33 nodes (264 chips) are connected all-to-all; beyond that, racks of
///   9 nodes (72 chips) are the groups, connected all-to-all within a group and group-to-group by global
///   links. A route is at most local -> inter-node -> global -> inter-node -> local... bounded by 5 hops
///   (the paper's local->local->global->local->local).
/// - `chain` (SHIP "QuadFour", production pipelines): each node links to its 4 forward and 4 backward
///   neighbour nodes, 4 links per neighbour: even chips hold the +-1 and +-2 links, odd chips the +-3
///   and +-4 links. The ends are joined (a ring of nodes): with that, a 72-chip system has a diameter of
///   3 hops and a 136-chip one of 5, SHIP's figures for its partitions.
///
/// Modelling assumption [U]: an inter-node link joins chips of the same index in the two nodes (the
/// sources give port counts, not the wiring). Routes are deterministic: the same pair always takes the
/// same hops. Every hop costs the per-hop latency; a transfer's bytes cross a link at the link bandwidth.

#include <cstdint>
#include <string>
#include <vector>

namespace lpurt::partition {

enum class TopologyKind { dragonfly, chain };
const char* topology_name(TopologyKind k);
/// "dragonfly" or "chain"; throws ConfigError otherwise.
TopologyKind parse_topology(const std::string& name);

/// One directed chip-to-chip link.
struct Hop {
  int64_t from = 0;
  int64_t to = 0;
  bool operator==(const Hop& o) const { return from == o.from && to == o.to; }
};

class Topology {
 public:
  static constexpr int64_t chips_per_node = 8;      ///< §2.1: GroqNode, K8 [P]
  static constexpr int64_t nodes_per_group = 9;     ///< §2.1: GroqRack, 9 nodes = 72 chips [P]
  static constexpr int64_t all_to_all_nodes = 33;   ///< §2.2: 32 global ports per node [S]
  static constexpr int64_t chain_reach = 4;         ///< §2.4: 4 forward + 4 backward neighbours [S]
  static constexpr int64_t max_dragonfly_chips = 10'440;  ///< §2.1: 145 racks x 72 [P]
  /// No source gives a largest chain (SHIP's partitions reach 576 chips); lpurt holds it to the
  /// dragonfly's size so that every accepted chip count is one the planner answers in moments [U].
  static constexpr int64_t max_chain_chips = max_dragonfly_chips;

  /// Throws ConfigError for a chip count the shape cannot hold (dragonfly: at most 10,440 chips).
  Topology(TopologyKind kind, int64_t n_chips);

  TopologyKind kind() const { return kind_; }
  int64_t n_chips() const { return n_chips_; }
  int64_t node_of(int64_t chip) const { return chip / chips_per_node; }
  /// Chips of a rack when the racks are joined only by global links (a dragonfly beyond 264 chips: one
  /// global link per pair of racks), else 0 (every node reaches every other over its own links).
  int64_t rack_chips() const {
    return kind_ == TopologyKind::dragonfly && n_nodes_ > all_to_all_nodes ? chips_per_node * nodes_per_group : 0;
  }

  /// Appends the hops of the route from chip a to chip b (none when a == b).
  void route(int64_t a, int64_t b, std::vector<Hop>& hops) const;
  int64_t hop_count(int64_t a, int64_t b) const;
  /// Largest hop count over all chip pairs (all pairs up to 1,000 chips; beyond, from the first node or
  /// rack to every chip, which covers every distance because the wiring is the same everywhere).
  int64_t diameter() const;

 private:
  void route_unchecked(int64_t a, int64_t b, std::vector<Hop>& hops) const;
  void check_route(const std::vector<Hop>& hops, std::size_t first) const;
  void route_between_nodes(int64_t a, int64_t b, std::vector<Hop>& hops) const;
  void route_chain(int64_t a, int64_t b, std::vector<Hop>& hops) const;

  TopologyKind kind_;
  int64_t n_chips_;
  int64_t n_nodes_;
};

}  // namespace lpurt::partition
