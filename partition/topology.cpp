#include "partition/topology.hpp"

#include <algorithm>
#include <cstdlib>

#include "chip/error.hpp"

namespace lpurt::partition {

const char* topology_name(TopologyKind k) { return k == TopologyKind::dragonfly ? "dragonfly" : "chain"; }

TopologyKind parse_topology(const std::string& name) {
  if (name == "dragonfly") return TopologyKind::dragonfly;
  if (name == "chain") return TopologyKind::chain;
  throw chip::ConfigError("topology: got \"" + name + "\", expected \"dragonfly\" or \"chain\"");
}

Topology::Topology(TopologyKind kind, int64_t n_chips)
    : kind_(kind), n_chips_(n_chips), n_nodes_((n_chips + chips_per_node - 1) / chips_per_node) {
  if (n_chips < 1) throw chip::ConfigError("topology needs at least 1 chip, got " + std::to_string(n_chips));
  if (kind == TopologyKind::dragonfly && n_chips > max_dragonfly_chips)
    throw chip::ConfigError("the dragonfly topology holds at most " + std::to_string(max_dragonfly_chips) +
                            " chips (145 racks of 72), got " + std::to_string(n_chips));
}

namespace {
// Moves along hops from `at` to `to`, appending the hop unless it is a no-op; returns the new position.
int64_t step(std::vector<Hop>& hops, int64_t at, int64_t to) {
  if (at != to) hops.push_back({at, to});
  return to;
}
}  // namespace

void Topology::route_between_nodes(int64_t a, int64_t b, std::vector<Hop>& hops) const {
  // Nodes joined directly (all-to-all, or within a dragonfly group): move to b's chip index inside a's
  // node, then cross to b's node on the link between equal indices. If a's node is the partly filled
  // last one and lacks that index, cross on a's own index first (b's node is then full).
  const int64_t via = node_of(a) * chips_per_node + b % chips_per_node;
  if (via < n_chips_) {
    step(hops, step(hops, a, via), b);
    return;
  }
  step(hops, step(hops, a, node_of(b) * chips_per_node + a % chips_per_node), b);
}

void Topology::route_chain(int64_t a, int64_t b, std::vector<Hop>& hops) const {
  int64_t at = a;
  const int64_t target_node = node_of(b);
  while (node_of(at) != target_node) {
    // The chain's ends are joined (a ring of nodes): the shorter way round, forward on a tie.
    int64_t distance = target_node - node_of(at);
    if (distance > n_nodes_ / 2) distance -= n_nodes_;
    if (distance < -(n_nodes_ - 1) / 2) distance += n_nodes_;
    int64_t jump = std::min<int64_t>(chain_reach, std::llabs(distance));
    int64_t parity = jump <= 2 ? 0 : 1;  // even chips hold +-1, +-2; odd chips +-3, +-4
    const int64_t index = at % chips_per_node;
    // A chip without a link of this length uses its partner (index ^ 1), which has it: load spreads
    // over the 4 links of the bundle instead of funnelling through one chip.
    int64_t via = index % 2 == parity ? index : (index ^ 1);
    auto next_node = [&] { return (node_of(at) + (distance > 0 ? jump : -jump) + n_nodes_) % n_nodes_; };
    // In the partly filled last node the chip holding that link, or the one it lands on, may not exist:
    // take a short jump through chip 0, which every node has.
    if (node_of(at) * chips_per_node + via >= n_chips_ || next_node() * chips_per_node + via >= n_chips_) {
      jump = std::min<int64_t>(2, std::llabs(distance));
      parity = 0;
      via = 0;
    }
    at = step(hops, at, node_of(at) * chips_per_node + via);
    at = step(hops, at, next_node() * chips_per_node + via);
  }
  step(hops, at, b);
}

void Topology::route(int64_t a, int64_t b, std::vector<Hop>& hops) const {
  const std::size_t first = hops.size();
  route_unchecked(a, b, hops);
  check_route(hops, first);  // every hop joins two chips that exist
}

void Topology::route_unchecked(int64_t a, int64_t b, std::vector<Hop>& hops) const {
  LPURT_ASSERT(a >= 0 && a < n_chips_ && b >= 0 && b < n_chips_);
  if (a == b) return;
  if (node_of(a) == node_of(b)) {
    hops.push_back({a, b});
    return;
  }
  if (kind_ == TopologyKind::chain) {
    route_chain(a, b, hops);
    return;
  }
  if (n_nodes_ <= all_to_all_nodes) {
    route_between_nodes(a, b, hops);
    return;
  }
  // Dragonfly with rack groups: inside a group, nodes are all-to-all; between groups G and H one global
  // link joins gateway chips chosen by the pair so that the 144 peers spread over a rack's chips.
  const int64_t chips_per_group = chips_per_node * nodes_per_group;
  const int64_t ga = a / chips_per_group, gb = b / chips_per_group;
  if (ga == gb) {
    route_between_nodes(a, b, hops);
    return;
  }
  const int64_t n_groups = (n_chips_ + chips_per_group - 1) / chips_per_group;
  auto gateway = [&](int64_t from_group, int64_t to_group) {
    const int64_t port = (to_group - from_group - 1 + n_groups) % n_groups;  // 0 .. n_groups-2
    int64_t chip = from_group * chips_per_group + port % chips_per_group;
    return std::min(chip, n_chips_ - 1);  // a partly filled last group
  };
  const int64_t out = gateway(ga, gb), in = gateway(gb, ga);
  int64_t at = a;
  if (node_of(at) != node_of(out)) {
    route_between_nodes(at, out, hops);
    at = out;
  }
  at = step(hops, at, out);
  at = step(hops, at, in);
  if (node_of(at) != node_of(b)) {
    route_between_nodes(at, b, hops);
  } else {
    step(hops, at, b);
  }
}

void Topology::check_route(const std::vector<Hop>& hops, std::size_t first) const {
  for (std::size_t i = first; i < hops.size(); ++i)
    LPURT_ASSERT(hops[i].from >= 0 && hops[i].from < n_chips_ && hops[i].to >= 0 && hops[i].to < n_chips_ &&
                 hops[i].from != hops[i].to);
}

int64_t Topology::hop_count(int64_t a, int64_t b) const {
  std::vector<Hop> hops;
  route(a, b, hops);
  return static_cast<int64_t>(hops.size());
}

int64_t Topology::diameter() const {
  // The wiring looks the same from every node of a ring and from every dragonfly group, so sources in
  // the first node (chain) or the first group (dragonfly) reach every distance. Small systems: all pairs.
  int64_t sources = n_chips_;
  if (n_chips_ > 1000)
    sources = std::min(n_chips_, kind_ == TopologyKind::chain ? chips_per_node : chips_per_node * nodes_per_group);
  int64_t worst = 0;
  std::vector<Hop> hops;
  for (int64_t a = 0; a < sources; ++a)
    for (int64_t b = 0; b < n_chips_; ++b) {
      hops.clear();
      route(a, b, hops);
      worst = std::max(worst, static_cast<int64_t>(hops.size()));
    }
  return worst;
}

}  // namespace lpurt::partition
