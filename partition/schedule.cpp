#include "partition/schedule.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "chip/cost_model.hpp"
#include "chip/shard.hpp"

namespace lpurt::partition {

const char* unit_name(Unit u) {
  switch (u) {
    case Unit::mxm: return "MXM";
    case Unit::vxm: return "VXM";
    case Unit::c2c: return "C2C";
  }
  return "?";
}

const char* op_name(OpKind k) {
  static const char* names[] = {"embed",    "attn_norm", "qkv",        "attention",    "reduce_max", "wo",
                                "reduce_sum", "attn_residual", "ffn_norm", "gate_up", "silu",     "down",
                                "ffn_residual", "moe_up", "moe_down", "final_norm", "lm_head",  "send",       "recv"};
  return names[static_cast<int>(k)];
}

const char* payload_name(Payload p) {
  static const char* names[] = {"none",       "amax",        "partial_sums", "reduced_sums", "embedding_partial",
                                "embedding_reduced", "activations", "moe_partial",  "moe_reduced", "moe_amax",
                                "activations_ffn", "activations_share", "activations_gathered", "activations_ffn_share"};
  return names[static_cast<int>(p)];
}

Reduced reduced_array(Payload partial) {
  switch (partial) {
    case Payload::partial_sums: return Reduced::linear_output;
    case Payload::embedding_partial: return Reduced::embedding;
    case Payload::moe_partial: return Reduced::expert_slots;
    default: break;
  }
  LPURT_ASSERT(false);
}

namespace {

/// The token-expert pairs of n tokens a chip holding `range` runs, with the k x n pairs spread uniformly
/// over the E experts (routing depends on the data, the schedule may not).
int64_t moe_pairs(const chip::ModelConfig& cfg, const chip::ShardRange& range, int64_t n) {
  return chip::ceil_div(cfg.n_experts_per_token * n * range.n_experts(), cfg.n_experts);
}

class Builder {
 public:
  /// `plan` may be null for a standalone collective program (no stages, no algorithm choice).
  Builder(const Plan* plan, const Topology& topology, Program& program)
      : plan_(plan), topology_(topology), p_(program) {
    last_compute_.assign(static_cast<std::size_t>(program.n_chips), -1);
    pending_recvs_.resize(static_cast<std::size_t>(program.n_chips));
    p_.chip_ops.resize(static_cast<std::size_t>(program.n_chips));
  }

  int64_t chip_id(int64_t stage, int64_t t) const { return plan_->at(replica_, stage, t).chip; }
  /// Where a chip of the program sits in the network (a standalone collective's chips are network chips).
  int64_t network(int64_t chip) const { return plan_ != nullptr ? plan_->network_chip(chip) : chip; }

  int32_t compute(int64_t chip, OpKind kind, Unit unit, int64_t layer, int32_t block, Payload payload = Payload::none) {
    Op op;
    op.kind = kind, op.unit = unit, op.chip = static_cast<int32_t>(chip), op.layer = static_cast<int32_t>(layer);
    op.payload = payload;
    op.block = block;
    auto& last = last_compute_[static_cast<std::size_t>(chip)];
    auto& pending = pending_recvs_[static_cast<std::size_t>(chip)];
    const int32_t index = push(op, last >= 0 ? &last : nullptr, last >= 0 ? 1 : 0, pending.data(), pending.size());
    pending.clear();
    last = index;
    return index;
  }

  /// A send and its receive. The send waits for the sender's last compute op and for `after` (receives
  /// of the sender's whose data it forwards). Returns the receive.
  int32_t transfer(int64_t from, int64_t to, Payload payload, int64_t elem_begin, int64_t elem_count,
                   int64_t bytes_per_elem, int64_t layer, int32_t block, const std::vector<int32_t>& after = {}) {
    Op send;
    send.kind = OpKind::send, send.unit = Unit::c2c, send.payload = payload;
    send.chip = static_cast<int32_t>(from), send.peer = static_cast<int32_t>(to);
    send.layer = static_cast<int32_t>(layer), send.block = block;
    send.elem_begin = elem_begin, send.elem_count = elem_count, send.bytes = elem_count * bytes_per_elem;
    send.hop_begin = static_cast<int32_t>(p_.hops.size());
    topology_.route(network(from), network(to), p_.hops);
    send.hop_count = static_cast<int32_t>(p_.hops.size()) - send.hop_begin;
    const int32_t producer = last_compute_[static_cast<std::size_t>(from)];
    const int32_t s = push(send, &producer, producer >= 0 ? 1 : 0, after.data(), after.size());
    Op recv = send;
    recv.kind = OpKind::recv, recv.chip = static_cast<int32_t>(to), recv.peer = static_cast<int32_t>(from);
    recv.hop_begin = recv.hop_count = 0;
    const int32_t r = push(recv, &s, 1);
    p_.ops[static_cast<std::size_t>(s)].match = r;
    p_.ops[static_cast<std::size_t>(r)].match = s;
    pending_recvs_[static_cast<std::size_t>(to)].push_back(r);
    return r;
  }

  /// The amax all-gather of the stage's chips: every chip ends with the max over the stage of the n
  /// values of each token.
  void all_gather_all(int64_t stage, Payload payload, int64_t count, int64_t layer, int32_t block) {
    const std::vector<int64_t>& chips = stage_chips(stage);
    const int32_t index = collective_index(chips, count, Combine::max);
    gather_max(chips, index, payload, layer, block);
  }

  /// Reduce-scatter then all-gather of the flat array of 4-byte elements `partial` belongs to, over the
  /// stage's chips, for a block of n tokens.
  void reduce_scatter_all_gather(int64_t stage, Payload partial, Payload reduced, int64_t n, int64_t layer,
                                 int32_t block) {
    const std::vector<int64_t>& chips = stage_chips(stage);
    const int32_t index = collective_index(chips, plan_->reduction(reduced_array(partial), n).elements, Combine::sum);
    all_reduce(chips, index, partial, reduced, layer, block);
  }

  /// Expands collective `index` as a sum over `chips`: the reduce-scatter steps (member t sends each
  /// member u of its step group the range u will own; every member sums its range), then the
  /// all-gather steps in reverse (member t sends its range to its group; from the second on, it forwards
  /// what it received in the step before).
  void all_reduce(const std::vector<int64_t>& chips, int32_t index, Payload partial, Payload reduced, int64_t layer,
                  int32_t block) {
    const Collective c = p_.collectives[static_cast<std::size_t>(index)];
    fill_ranges(c);
    for (int step = 0; step < c.steps; ++step) {
      for (int64_t t = 0; t < c.members; ++t)
        for (int64_t q = 0; q < c.group_size(step); ++q) {
          const int64_t u = c.peer(step, t, q);
          if (u == t) continue;
          const auto& [begin, end] = ranges_[static_cast<std::size_t>(step * c.members + u)];
          const int32_t r = transfer(chips[static_cast<std::size_t>(t)], chips[static_cast<std::size_t>(u)], partial,
                                     begin, end - begin, 4, layer, block);
          mark(r, step, index);
        }
      for (int64_t t = 0; t < c.members; ++t)
        mark(compute(chips[static_cast<std::size_t>(t)], OpKind::reduce_sum, Unit::vxm, layer, block, partial), step, index);
    }
    received_.resize(static_cast<std::size_t>(c.members));
    for (auto& list : received_) list.clear();
    all_gather(chips, index, reduced, layer, block);
  }

  /// Fills ranges_ with collective `c`'s member ranges.
  void fill_ranges(const Collective& c) {
    ranges_.resize(static_cast<std::size_t>(c.steps * c.members));
    for (int step = 0; step < c.steps; ++step)
      for (int64_t t = 0; t < c.members; ++t)
        ranges_[static_cast<std::size_t>(step * c.members + t)] = {c.begin(step, t), c.end(step, t)};
  }

  /// Expands collective `index`'s all-gather steps over `chips`: from the last step to the first, member t
  /// sends the range it holds to its step group; from the second on, it forwards what it received in the
  /// step before. Member t's first sends wait for received_[t] (the receives that delivered its range).
  void all_gather(const std::vector<int64_t>& chips, int32_t index, Payload reduced, int64_t layer, int32_t block) {
    const Collective c = p_.collectives[static_cast<std::size_t>(index)];
    // [members] the receives of the previous all-gather step, per receiving member.
    std::vector<std::vector<int32_t>>& received = received_;
    std::vector<std::vector<int32_t>>& next = next_received_;
    next.resize(received.size());
    for (auto& list : next) list.clear();
    fill_ranges(c);
    for (int step = c.steps - 1; step >= 0; --step) {
      for (int64_t t = 0; t < c.members; ++t)
        for (int64_t q = 0; q < c.group_size(step); ++q) {
          const int64_t u = c.peer(step, t, q);
          if (u == t) continue;
          const auto& [begin, end] = ranges_[static_cast<std::size_t>(step * c.members + t)];
          const int32_t r = transfer(chips[static_cast<std::size_t>(t)], chips[static_cast<std::size_t>(u)], reduced,
                                     begin, end - begin, 4, layer, block, received[static_cast<std::size_t>(t)]);
          mark(r, step, index);
          if (step > 0) next[static_cast<std::size_t>(u)].push_back(r);
        }
      received.swap(next);
      for (auto& list : next) list.clear();
    }
  }

  /// Expands collective `index` as a max over `chips` of every member's whole array: per step, each
  /// member sends its running max to its group and takes the max of what it received.
  void gather_max(const std::vector<int64_t>& chips, int32_t index, Payload payload, int64_t layer, int32_t block) {
    const Collective c = p_.collectives[static_cast<std::size_t>(index)];
    for (int step = 0; step < c.steps; ++step) {
      for (int64_t t = 0; t < c.members; ++t)
        for (int64_t q = 0; q < c.group_size(step); ++q) {
          const int64_t u = c.peer(step, t, q);
          if (u != t)
            mark(transfer(chips[static_cast<std::size_t>(t)], chips[static_cast<std::size_t>(u)], payload, 0, c.elements, 4,
                          layer, block),
                 step, index);
        }
      for (int64_t t = 0; t < c.members; ++t)
        mark(compute(chips[static_cast<std::size_t>(t)], OpKind::reduce_max, Unit::vxm, layer, block, payload), step, index);
    }
  }

  /// Index of `c` in Program::collectives, added if new.
  int32_t add_collective(const Collective& c) {
    p_.collectives.push_back(c);
    return static_cast<int32_t>(p_.collectives.size()) - 1;
  }

  void each_chip(int64_t stage, OpKind kind, Unit unit, int64_t layer, int32_t block, Payload payload = Payload::none) {
    for (int64_t t = 0; t < plan_->tp; ++t) compute(chip_id(stage, t), kind, unit, layer, block, payload);
  }

  /// An FFN's input half: norm, gate/up, SiLU, and the amax all-gather its output half quantizes with.
  void ffn_in(int64_t s, int64_t l, int64_t n, int32_t b) {
    each_chip(s, OpKind::ffn_norm, Unit::vxm, l, b);
    if (plan_->model.is_moe()) {
      // Every chip routes alike and computes the chosen experts' columns it holds (whole experts, or a
      // slice of one). The slots' amax over each expert's whole width is the max over the stage (chips
      // that do not hold a slot give 0). Booked on the MXM; its router and SiLU work (VXM) is costed
      // inside it, not booked separately.
      each_chip(s, OpKind::moe_up, Unit::mxm, l, b);
      if (plan_->tp > 1) all_gather_all(s, Payload::moe_amax, n * plan_->model.n_experts_per_token, l, b);
      return;
    }
    each_chip(s, OpKind::gate_up, Unit::mxm, l, b);
    each_chip(s, OpKind::silu, Unit::vxm, l, b);
    if (plan_->tp > 1) all_gather_all(s, Payload::amax, n, l, b);
  }

  /// An FFN's output half: w_down, the int32 reduction over the stage, the residual add.
  void ffn_out(int64_t s, int64_t l, int64_t n, int32_t b, Payload unpack = Payload::none) {
    if (plan_->model.is_moe()) {
      // The int32 w_down sums are summed over the stage (non-holders give 0) before any chip dequantizes,
      // so a sliced expert's output is its single-chip output; every chip then dequantizes, weights and
      // adds the slots in expert order.
      each_chip(s, OpKind::moe_down, Unit::mxm, l, b, unpack);
      if (plan_->tp > 1) reduce_scatter_all_gather(s, Payload::moe_partial, Payload::moe_reduced, n, l, b);
    } else {
      each_chip(s, OpKind::down, Unit::mxm, l, b, unpack);
      if (plan_->tp > 1) reduce_scatter_all_gather(s, Payload::partial_sums, Payload::reduced_sums, n, l, b);
    }
    each_chip(s, OpKind::ffn_residual, Unit::vxm, l, b);
  }

  void attention(int64_t s, int64_t l, int64_t n, int32_t b) {
    const bool split = plan_->tp > 1;
    each_chip(s, OpKind::attn_norm, Unit::vxm, l, b);
    each_chip(s, OpKind::qkv, Unit::mxm, l, b);
    each_chip(s, OpKind::attention, Unit::vxm, l, b);
    if (split) all_gather_all(s, Payload::amax, n, l, b);
    each_chip(s, OpKind::wo, Unit::mxm, l, b);
    if (split) reduce_scatter_all_gather(s, Payload::partial_sums, Payload::reduced_sums, n, l, b);
    each_chip(s, OpKind::attn_residual, Unit::vxm, l, b);
  }

  /// What stage s - 1 hands stage s, chip (s - 1, t) to chip (s, t): the activations, and when stage s
  /// begins at an FFN's output half, with them the input half's results for the same FFN columns and
  /// experts (the same tp rank), chip::ffn_hand_off_values: the SiLU output and the stage's amax, and in
  /// an MoE layer the routing. Whole, one transfer per chip; or split (split_hand_off), each chip sending
  /// its share of the activations, which stage s all-gathers. Returns what stage s's first w_down (down or
  /// moe_down) unpacks: activations_ffn (whole, inside an FFN) or none.
  Payload hand_off(int64_t s, int64_t n, int32_t b) {
    const Plan& plan = *plan_;
    const int64_t begin = plan.stage_part_begin[static_cast<std::size_t>(s)];
    const bool inside_ffn = chip::part_kind(begin) == chip::LayerPart::ffn_out;
    from_chips_ = stage_chips(s - 1);
    const std::vector<int64_t>& to = stage_chips(s);
    ffn_values_.clear();
    if (inside_ffn)
      for (const int64_t chip : from_chips_)
        ffn_values_.push_back(
            chip::ffn_hand_off_values(plan.model, plan.chips[static_cast<std::size_t>(chip)].range, n));
    // Of those, the values the links do not carry (an MoE hand-off's).
    ffn_unsent_.clear();
    if (inside_ffn)
      for (const int64_t chip : from_chips_) {
        const chip::ShardRange& range = plan.chips[static_cast<std::size_t>(chip)].range;
        ffn_unsent_.push_back(chip::ffn_hand_off_values(plan.model, range, n) -
                              ffn_hand_off_link_values(plan.model, range, n, plan.hardware));
      }
    const int32_t gather = plan.tp > 1 ? split_hand_off(from_chips_, to, n) : -1;
    hand_off_transfers(from_chips_, to, n * plan.model.hidden_size, gather, inside_ffn ? chip::part_layer(begin) : -1,
                       b);
    return inside_ffn && gather < 0 ? Payload::activations_ffn : Payload::none;
  }

  /// The hand-off transfers of `elements` activations from `from` to `to` (member t to member t), with
  /// ffn_values_[t] values of the FFN's input half when it is not empty. `gather` < 0: whole; else split
  /// over collective `gather`'s ranges (a member's range after its last reduce-scatter step) and
  /// all-gathered over `to`.
  void hand_off_transfers(const std::vector<int64_t>& from, const std::vector<int64_t>& to, int64_t elements,
                          int32_t gather, int64_t layer, int32_t b) {
    const bool inside_ffn = !ffn_values_.empty();
    if (gather < 0) {
      for (std::size_t t = 0; t < to.size(); ++t) {
        if (inside_ffn)
          with_link_values(
              transfer(from[t], to[t], Payload::activations_ffn, 0, elements + ffn_values_[t], 4, layer, b), t);
        else transfer(from[t], to[t], Payload::activations, 0, elements, 4, -1, b);
      }
      return;
    }
    const Collective c = p_.collectives[static_cast<std::size_t>(gather)];
    const int last = c.steps - 1;
    received_.resize(to.size());
    for (std::size_t t = 0; t < to.size(); ++t) {
      // Inside an FFN, the input half's results ride in the same transfer: a transfer pays its route's
      // latency on every link of it, and the stage's routes may share one.
      const auto member = static_cast<int64_t>(t);
      const int64_t share = c.end(last, member) - c.begin(last, member);
      const int32_t r =
          inside_ffn ? transfer(from[t], to[t], Payload::activations_ffn_share, c.begin(last, member),
                                share + ffn_values_[t], 4, layer, b)
                     : transfer(from[t], to[t], Payload::activations_share, c.begin(last, member), share, 4, -1, b);
      if (inside_ffn) with_link_values(r, t);
      received_[t].assign(1, r);
    }
    all_gather(to, gather, Payload::activations_gathered, -1, b);
  }

  /// Sets the link values of member t's FFN hand-off transfer `recv` (and of its send): all but
  /// ffn_unsent_[t].
  void with_link_values(int32_t recv, std::size_t t) {
    if (ffn_unsent_[t] == 0) return;
    Op& r = p_.ops[static_cast<std::size_t>(recv)];
    r.link_values = p_.ops[static_cast<std::size_t>(r.match)].link_values =
        static_cast<int32_t>(r.elem_count - ffn_unsent_[t]);
  }

  /// Whether stage s's hand-off of n tokens from `from` to `to` is split: the collective whose ranges
  /// and all-gather it uses when its standalone program (the transfers alone on an idle network, from
  /// cycle 0) ends strictly before the whole copies', else -1 (ties keep the whole copies, as with one
  /// chip a stage). Decided once per receiving group and block size.
  int32_t split_hand_off(const std::vector<int64_t>& from, const std::vector<int64_t>& to, int64_t n) {
    const auto key = std::make_pair(to.front(), n);
    const auto it = split_.find(key);
    if (it != split_.end()) return it->second;
    const int64_t elements = n * plan_->model.hidden_size;
    const int32_t gather = collective_index(to, elements, Combine::sum);
    // The standalone programs run on network chips.
    std::vector<int64_t> from_network(from.size()), to_network(to.size());
    for (std::size_t t = 0; t < from.size(); ++t) from_network[t] = network(from[t]), to_network[t] = network(to[t]);
    Plan bare;  // transfers only: their timeline reads only the hardware
    bare.hardware = plan_->hardware;
    int64_t cycles[2] = {0, 0};
    for (const bool split : {false, true}) {
      Program alone;
      alone.n_chips = alone.network_chips = topology_.n_chips();
      alone.blocks = {Block{}};
      Builder builder(nullptr, topology_, alone);
      builder.ffn_values_ = ffn_values_;
      builder.ffn_unsent_ = ffn_unsent_;
      const int32_t index = split ? builder.add_collective(p_.collectives[static_cast<std::size_t>(gather)]) : -1;
      builder.hand_off_transfers(from_network, to_network, elements, index, -1, 0);
      cycles[split] = TimelineSolver(alone, bare).at(0).makespan_cycles;
    }
    const int32_t chosen = cycles[1] < cycles[0] ? gather : -1;
    split_.emplace(key, chosen);
    return chosen;
  }

  /// Appends block `b` of a program of `n_blocks`.
  void block(int32_t b, const Block& blk, std::size_t n_blocks) {
    replica_ = blk.replica;
    const Plan& plan = *plan_;
    const int64_t n = blk.n_tokens;
    each_chip(0, OpKind::embed, Unit::vxm, -1, b);
    if (plan.tp > 1) reduce_scatter_all_gather(0, Payload::embedding_partial, Payload::embedding_reduced, n, -1, b);
    for (int64_t s = 0; s < plan.pp; ++s) {
      const Payload unpack = s > 0 ? hand_off(s, n, b) : Payload::none;
      const int64_t part_begin = plan.stage_part_begin[static_cast<std::size_t>(s)];
      const int64_t part_end = plan.stage_part_begin[static_cast<std::size_t>(s + 1)];
      for (int64_t part = part_begin; part < part_end; ++part) {
        const int64_t l = chip::part_layer(part);
        switch (chip::part_kind(part)) {
          case chip::LayerPart::attention: attention(s, l, n, b); break;
          case chip::LayerPart::ffn_in: ffn_in(s, l, n, b); break;
          case chip::LayerPart::ffn_out: ffn_out(s, l, n, b, part == part_begin ? unpack : Payload::none); break;
        }
      }
      if (b == 0 && s == 0) reserve_from_first_stage(part_end - part_begin, n_blocks);
    }
    if (blk.with_logits) {
      each_chip(plan.pp - 1, OpKind::final_norm, Unit::vxm, -1, b);
      each_chip(plan.pp - 1, OpKind::lm_head, Unit::mxm, -1, b);
    }
  }

 private:
  /// Sizes the arrays from the first stage of the first block: stages hold about as many layer parts each
  /// (balance_stages) and blocks about as many ops, so the program has about its parts over the stage's
  /// times the blocks as many, and one stage more for what only some stages do (embedding, logits). A tp
  /// 64 block has a million ops: one allocation instead of doubling them from nothing. An estimate: a
  /// shortfall grows the arrays as before.
  void reserve_from_first_stage(int64_t stage_parts, std::size_t n_blocks) {
    const auto parts = static_cast<std::size_t>(plan_->stage_part_begin.back() - plan_->stage_part_begin.front());
    const auto estimate = [&](std::size_t size) {
      return size * parts / static_cast<std::size_t>(stage_parts) * n_blocks + size;
    };
    p_.ops.reserve(estimate(p_.ops.size()));
    p_.deps.reserve(estimate(p_.deps.size()));
    p_.hops.reserve(estimate(p_.hops.size()));
  }

  /// Appends op with its dependencies: `first` (count 0 or 1), then `more`.
  int32_t push(const Op& op_in, const int32_t* first, std::size_t first_count, const int32_t* more = nullptr,
               std::size_t more_count = 0) {
    Op op = op_in;
    op.dep_begin = static_cast<int32_t>(p_.deps.size());
    op.dep_count = static_cast<int32_t>(first_count + more_count);
    p_.deps.insert(p_.deps.end(), first, first + first_count);
    p_.deps.insert(p_.deps.end(), more, more + more_count);
    const auto index = static_cast<int32_t>(p_.ops.size());
    p_.ops.push_back(op);
    p_.chip_ops[static_cast<std::size_t>(op.chip)].push_back(index);
    return index;
  }

  void mark(int32_t op, int step, int32_t collective) {
    p_.ops[static_cast<std::size_t>(op)].step = static_cast<uint8_t>(step);
    p_.ops[static_cast<std::size_t>(op)].collective = collective;
    const int32_t match = p_.ops[static_cast<std::size_t>(op)].match;
    if (match >= 0) {
      p_.ops[static_cast<std::size_t>(match)].step = static_cast<uint8_t>(step);
      p_.ops[static_cast<std::size_t>(match)].collective = collective;
    }
  }

  /// The chips of `stage` of the current replica, in tp order.
  const std::vector<int64_t>& stage_chips(int64_t stage) {
    stage_chips_.resize(static_cast<std::size_t>(plan_->tp));
    for (int64_t t = 0; t < plan_->tp; ++t) stage_chips_[static_cast<std::size_t>(t)] = chip_id(stage, t);
    return stage_chips_;
  }

  /// The collective the group `chips` uses for `elements`, chosen once per group and message (a stage's
  /// chips are consecutive from its first, which names the group).
  int32_t collective_index(const std::vector<int64_t>& chips, int64_t elements, Combine combine) {
    const auto key = std::make_tuple(chips.front(), elements, combine);
    const auto it = chosen_.find(key);
    if (it != chosen_.end()) return it->second;
    network_chips_.resize(chips.size());
    for (std::size_t t = 0; t < chips.size(); ++t) network_chips_[t] = network(chips[t]);
    const int32_t index = add_collective(choose_collective(network_chips_, elements, combine, topology_, plan_->hardware));
    chosen_.emplace(key, index);
    return index;
  }

  const Plan* plan_;
  const Topology& topology_;
  Program& p_;
  std::vector<int64_t> stage_chips_;
  std::vector<int64_t> network_chips_;  ///< collective_index's: the stage's chips in the network
  /// all_gather's (filled by all_reduce, hand_off_transfers), kept to reuse their storage
  std::vector<std::vector<int32_t>> received_, next_received_;
  /// [steps][members] the ranges of the collective being expanded, Collective::begin and end of each
  /// member after each reduce-scatter step (computed once per member, not once per transfer)
  std::vector<std::array<int64_t, 2>> ranges_;
  std::map<std::tuple<int64_t, int64_t, Combine>, int32_t> chosen_;
  std::map<std::pair<int64_t, int64_t>, int32_t> split_;  ///< split_hand_off's, by (first receiving chip, n)
  std::vector<int64_t> from_chips_;    ///< hand_off's: the sending stage's chips
  std::vector<int64_t> ffn_values_;    ///< hand_off's: [tp] FFN input half values each sender hands on (or none)
  std::vector<int64_t> ffn_unsent_;    ///< hand_off's: [tp] of those, the values the links do not carry
  std::vector<int32_t> last_compute_;
  std::vector<std::vector<int32_t>> pending_recvs_;
  int64_t replica_ = 0;
};

int64_t compute_cycles(const Program& p, const Op& op, const Plan& plan, const chip::CostModel& cost, int64_t position,
                       int64_t n) {
  if (op.kind == OpKind::reduce_sum || op.kind == OpKind::reduce_max) {
    // One step of the collective: the group's values of the chip's range (sum) or of the whole array (max).
    const Collective& c = p.collectives[static_cast<std::size_t>(op.collective)];
    const int64_t share = op.kind == OpKind::reduce_sum ? c.max_share(op.step) : c.elements;
    return cost.vector_cycles(c.group_size(op.step) * share);
  }
  const chip::ModelConfig& m = plan.model;
  const chip::ShardRange& g = plan.chips[static_cast<std::size_t>(op.chip)].range;
  const int64_t d = m.hidden_size, hd = m.head_dim(), kvh = g.n_kv_heads(m);
  switch (op.kind) {
    case OpKind::embed: return cost.vector_cycles(d * n);
    case OpKind::attn_norm:
    case OpKind::ffn_norm: return cost.vector_cycles(4 * d * n);
    case OpKind::qkv: return cost.matmul_cycles((g.n_heads() + 2 * kvh) * hd, d, n);
    case OpKind::attention: {
      // RoPE (3 ops per element of q and k), and in format 2 the q/k/v bias adds and the per-head q/k
      // RMSNorm (4 ops per element, as rmsnorm over D costs 4 D).
      const int64_t qk_values = (g.n_heads() + kvh) * hd * n;
      const int64_t bias_values = m.attention_bias ? (g.n_heads() + 2 * kvh) * hd * n : 0;
      const int64_t norm_values = m.qk_norm ? 4 * qk_values : 0;
      return cost.vector_cycles(3 * qk_values + bias_values + norm_values) +
             cost.attention_cycles(g.n_heads(), kvh, hd, position, n);
    }
    case OpKind::wo: return cost.matmul_cycles(d, g.n_heads() * hd, n);
    case OpKind::attn_residual: return cost.vector_cycles(2 * d * n);
    // MoE: the k slots dequantized and weighted (the weighting was the expert op's before the int32
    // reduction), summed, added.
    case OpKind::ffn_residual: return cost.vector_cycles((2 + 2 * m.n_experts_per_token) * d * n);
    case OpKind::gate_up: return cost.matmul_cycles(2 * g.n_ffn(), d, n);
    case OpKind::silu: return cost.vector_cycles(4 * g.n_ffn() * n);
    case OpKind::down: return cost.matmul_cycles(d, g.n_ffn(), n);
    case OpKind::moe_up:
    case OpKind::moe_down: {
      // Routing depends on the data, the schedule may not: assume the k * n token-expert pairs of a block
      // spread uniformly over the E experts (documented; the same in functional and timing-only runs).
      // This chip then runs its share of the pairs and streams its columns of every held expert some pair
      // chose: gate/up and SiLU in moe_up, w_down in moe_down.
      const int64_t pairs = moe_pairs(m, g, n);
      const int64_t streamed = std::min(g.n_experts(), pairs);
      const int64_t tokens_per_expert = streamed > 0 ? chip::ceil_div(pairs, streamed) : 0;
      if (op.kind == OpKind::moe_down) return streamed * cost.matmul_cycles(d, g.n_ffn(), tokens_per_expert);
      return cost.vector_cycles(2 * m.n_experts * d * n) + streamed * cost.matmul_cycles(2 * g.n_ffn(), d, tokens_per_expert) +
             cost.vector_cycles(4 * g.n_ffn() * pairs);
    }
    case OpKind::final_norm: return cost.vector_cycles(4 * d);
    case OpKind::lm_head: return cost.matmul_cycles(g.n_vocab(), d, 1);
    case OpKind::reduce_sum:
    case OpKind::reduce_max:
    case OpKind::send:
    case OpKind::recv: break;
  }
  LPURT_ASSERT(false);
}

}  // namespace

int64_t ffn_hand_off_link_values(const chip::ModelConfig& cfg, const chip::ShardRange& range, int64_t n,
                                 const chip::ChipSpec& hw) {
  const int64_t values = chip::ffn_hand_off_values(cfg, range, n);
  if (!cfg.is_moe()) return values;
  const int64_t slots = n * cfg.n_experts_per_token;
  const int64_t rows = (values - 3 * slots) / range.n_ffn();  // the held slots' rows the host sends
  const int64_t pairs = std::min(rows, moe_pairs(cfg, range, n));
  return 2 * slots + chip::ceil_div(slots, hw.activation_bytes_per_value) + pairs * range.n_ffn();
}

Program build_program(const Plan& plan, const Topology& topology, const std::vector<Block>& blocks) {
  LPURT_ASSERT(topology.n_chips() >= plan.n_chips());
  Program p;
  p.n_chips = plan.n_chips();
  p.network_chips = topology.n_chips();
  p.blocks = blocks;
  Builder builder(&plan, topology, p);
  for (std::size_t b = 0; b < blocks.size(); ++b) builder.block(static_cast<int32_t>(b), blocks[b], blocks.size());
  return p;
}

namespace {

/// Calls visit(stage_a, rank_a, stage_b, rank_b) for every pair of a replica's chips a transfer of
/// build_program may join: any two of a stage (its collectives), and each chip and the chip of the next
/// stage with its tp rank (hand-offs).
template <class Visit>
void for_each_transfer_pair(const Plan& plan, Visit&& visit) {
  for (int64_t s = 0; s < plan.pp; ++s)
    for (int64_t t = 0; t < plan.tp; ++t) {
      for (int64_t u = 0; u < plan.tp; ++u) visit(s, t, s, u);
      if (s + 1 < plan.pp) visit(s, t, s + 1, t);
    }
}

}  // namespace

std::vector<int64_t> replica_links(const Plan& plan, const Topology& topology, int64_t replica) {
  std::vector<Hop> hops;
  for_each_transfer_pair(plan, [&](int64_t s, int64_t t, int64_t s2, int64_t u) {
    topology.route(plan.at(replica, s, t).network_chip, plan.at(replica, s2, u).network_chip, hops);
  });
  std::vector<int64_t> links(hops.size());
  for (std::size_t h = 0; h < hops.size(); ++h) links[h] = hops[h].from * topology.n_chips() + hops[h].to;
  std::sort(links.begin(), links.end());
  links.erase(std::unique(links.begin(), links.end()), links.end());
  return links;
}

bool congruent_to_first_replica(const Plan& plan, const Topology& topology, int64_t replica) {
  // Whole nodes keep which collectives a stage may use (candidate_collectives reads nodes and indices).
  const int64_t shift = plan.at(replica, 0, 0).network_chip - plan.at(0, 0, 0).network_chip;
  if (shift % Topology::chips_per_node != 0) return false;
  for (int64_t s = 0; s < plan.pp; ++s)
    for (int64_t t = 0; t < plan.tp; ++t)
      if (plan.at(replica, s, t).network_chip != plan.at(0, s, t).network_chip + shift) return false;
  bool congruent = true;
  std::vector<Hop> first, moved;
  for_each_transfer_pair(plan, [&](int64_t s, int64_t t, int64_t s2, int64_t u) {
    if (!congruent) return;
    first.clear(), moved.clear();
    topology.route(plan.at(0, s, t).network_chip, plan.at(0, s2, u).network_chip, first);
    topology.route(plan.at(replica, s, t).network_chip, plan.at(replica, s2, u).network_chip, moved);
    congruent = first.size() == moved.size() &&
                std::equal(first.begin(), first.end(), moved.begin(), [&](const Hop& a, const Hop& b) {
                  return b.from == a.from + shift && b.to == a.to + shift;
                });
  });
  return congruent;
}

Program build_collective_program(const std::vector<int64_t>& chips, const Collective& collective, Combine combine,
                                 const Topology& topology) {
  LPURT_ASSERT(static_cast<int64_t>(chips.size()) == collective.members);
  Program p;
  p.n_chips = p.network_chips = topology.n_chips();
  p.blocks = {Block{}};
  Builder builder(nullptr, topology, p);
  const int32_t index = builder.add_collective(collective);
  if (combine == Combine::sum) builder.all_reduce(chips, index, Payload::partial_sums, Payload::reduced_sums, -1, 0);
  else builder.gather_max(chips, index, Payload::amax, -1, 0);
  return p;
}

namespace {

int64_t op_cycles(const Program& p, const Op& op, const Plan& plan, const chip::CostModel& cost, int64_t base_position) {
  const Block& blk = p.blocks[static_cast<std::size_t>(op.block)];
  const int64_t cycles = compute_cycles(p, op, plan, cost, base_position + blk.position_offset, blk.n_tokens);
  const double speed = plan.hardware.chip_speed(plan.network_chip(op.chip));
  return speed == 1 ? cycles : static_cast<int64_t>(std::ceil(static_cast<double>(cycles) / speed));
}

/// Cycles of a send: every hop's latency, then its bytes at the pace of the slowest link on its route.
int64_t send_cycles(const Program& p, const Op& op, const Plan& plan) {
  double bandwidth_factor = 1;
  for (int32_t h = 0; h < op.hop_count && !plan.hardware.link_bandwidth_factors.empty(); ++h) {
    const Hop& hop = p.hops[static_cast<std::size_t>(op.hop_begin + h)];
    bandwidth_factor = std::min(bandwidth_factor, plan.hardware.link_bandwidth(hop.from, hop.to));
  }
  const double seconds = static_cast<double>(op.hop_count) * plan.hardware.hop_latency_ns * 1e-9 +
                         static_cast<double>(link_bytes(op, plan.hardware)) / (plan.hardware.link_bytes_per_s * bandwidth_factor);
  return static_cast<int64_t>(std::ceil(seconds * plan.hardware.clock_hz));
}

}  // namespace

int64_t compute_op_cycles(const Program& p, const Op& op, const Plan& plan, int64_t base_position) {
  return op_cycles(p, op, plan, chip::CostModel(plan.hardware), base_position);
}

std::vector<int64_t> op_durations(const Program& p, const Plan& plan, int64_t base_position) {
  const chip::CostModel cost(plan.hardware);
  std::vector<int64_t> cycles(p.ops.size(), 0);
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    const Op& op = p.ops[i];
    if (op.kind == OpKind::send)
      cycles[i] = send_cycles(p, op, plan);
    else if (op.kind != OpKind::recv)
      cycles[i] = op_cycles(p, op, plan, cost, base_position);
  }
  return cycles;
}

TimelineSolver::TimelineSolver(const Program& p, const Plan& plan) : program_(p), plan_(plan) {
  Timeline& t = timeline_;
  t.start_cycles.assign(p.ops.size(), 0);
  // At position 0; at() sets the attention ops' for its position.
  t.duration_cycles = op_durations(p, plan, 0);
  t.waited_for.assign(p.ops.size(), -1);
  // The last op that took each unit ([chip][mxm|vxm]) and each directed link, in array order.
  std::vector<int32_t> unit_last(static_cast<std::size_t>(2 * p.n_chips), -1);
  std::unordered_map<int64_t, int32_t> link_last;
  link_last.reserve(1024);
  pred_begin_.reserve(p.ops.size() + 1);
  preds_.reserve(p.deps.size() + p.ops.size() + p.hops.size());
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    const Op& op = p.ops[i];
    pred_begin_.push_back(static_cast<int32_t>(preds_.size()));
    preds_.insert(preds_.end(), p.deps.begin() + op.dep_begin, p.deps.begin() + op.dep_begin + op.dep_count);
    if (op.kind == OpKind::recv) continue;  // the data has arrived when the matching send ends
    if (op.kind == OpKind::send) {
      for (int32_t h = 0; h < op.hop_count; ++h) {
        const Hop& hop = p.hops[static_cast<std::size_t>(op.hop_begin + h)];
        const auto [it, first_use] = link_last.try_emplace(p.link_key(hop), static_cast<int32_t>(i));
        if (!first_use) preds_.push_back(std::exchange(it->second, static_cast<int32_t>(i)));
      }
      continue;
    }
    int32_t& last = unit_last[static_cast<std::size_t>(2 * op.chip + (op.unit == Unit::mxm ? 0 : 1))];
    if (last >= 0) preds_.push_back(last);
    last = static_cast<int32_t>(i);
    if (op.kind == OpKind::attention) attention_ops_.push_back(static_cast<int32_t>(i));
  }
  pred_begin_.push_back(static_cast<int32_t>(preds_.size()));
  attention_cycles_.assign(attention_ops_.size(), 0);
}

const Timeline& TimelineSolver::at(int64_t base_position) {
  const chip::CostModel cost(plan_.hardware);
  Timeline& t = timeline_;
  bool changed = solves_ == 0;
  for (std::size_t k = 0; k < attention_ops_.size(); ++k) {
    const auto i = static_cast<std::size_t>(attention_ops_[k]);
    const int64_t cycles = op_cycles(program_, program_.ops[i], plan_, cost, base_position);
    changed = changed || cycles != attention_cycles_[k];
    attention_cycles_[k] = t.duration_cycles[i] = cycles;
  }
  if (!changed) return t;
  ++solves_;
  t.makespan_cycles = 0;
  for (std::size_t i = 0; i < program_.ops.size(); ++i) {
    // The latest-ending predecessor; on a tie the first listed (a data dependency before a resource).
    int64_t ready = 0;
    int32_t waited_for = -1;
    for (int32_t k = pred_begin_[i]; k < pred_begin_[i + 1]; ++k) {
      const auto pred = static_cast<std::size_t>(preds_[static_cast<std::size_t>(k)]);
      const int64_t end = t.start_cycles[pred] + t.duration_cycles[pred];
      if (end > ready) ready = end, waited_for = static_cast<int32_t>(pred);
    }
    t.start_cycles[i] = ready;
    t.waited_for[i] = waited_for;
    if (program_.ops[i].kind != OpKind::recv) t.makespan_cycles = std::max(t.makespan_cycles, ready + t.duration_cycles[i]);
  }
  return t;
}

Timeline compute_timeline(const Program& p, const Plan& plan, int64_t base_position) {
  return TimelineSolver(p, plan).at(base_position);
}

std::string describe_op(const Program& p, const Timeline& t, std::size_t i) {
  const Op& op = p.ops[i];
  std::string s = "chip " + std::to_string(op.chip) + " " + op_name(op.kind);
  if (op.kind == OpKind::send) s += " to chip " + std::to_string(op.peer);
  if (op.kind == OpKind::recv) s += " from chip " + std::to_string(op.peer);
  if (op.payload != Payload::none) s += " (" + std::string(payload_name(op.payload)) + ", " + std::to_string(op.bytes) + " bytes)";
  if (op.layer >= 0) s += " layer " + std::to_string(op.layer);
  if (i < t.start_cycles.size())
    s += " [cycles " + std::to_string(t.start_cycles[i]) + ".." + std::to_string(t.end_cycles(i)) + ")";
  return s;
}

void verify(const Program& p, const Timeline& t) {
  if (t.start_cycles.size() != p.ops.size() || t.duration_cycles.size() != p.ops.size())
    throw ScheduleError("timeline has " + std::to_string(t.start_cycles.size()) + " ops, program has " +
                        std::to_string(p.ops.size()));
  struct Interval {
    int64_t start, end;
    std::size_t op;
  };
  std::unordered_map<int64_t, std::vector<Interval>> units, links;
  for (std::size_t i = 0; i < p.ops.size(); ++i) {
    const Op& op = p.ops[i];
    if (op.kind == OpKind::send || op.kind == OpKind::recv) {
      const bool send = op.kind == OpKind::send;
      const auto m = static_cast<std::size_t>(op.match);
      if (op.match < 0 || m >= p.ops.size() || p.ops[m].kind != (send ? OpKind::recv : OpKind::send) ||
          p.ops[m].match != static_cast<int32_t>(i))
        throw ScheduleError(describe_op(p, t, i) + " has no matching " + (send ? "receive" : "send"));
      const Op& other = p.ops[m];
      if (other.chip != op.peer || other.peer != op.chip)
        throw ScheduleError(describe_op(p, t, i) + " is matched with " + describe_op(p, t, m) + " between other chips");
      if (other.bytes != op.bytes)
        throw ScheduleError("size mismatch: " + describe_op(p, t, send ? i : m) + " sends " +
                            std::to_string(send ? op.bytes : other.bytes) + " bytes but " +
                            describe_op(p, t, send ? m : i) + " receives " + std::to_string(send ? other.bytes : op.bytes));
      if (send)
        for (int32_t h = 0; h < op.hop_count; ++h) {
          const Hop& hop = p.hops[static_cast<std::size_t>(op.hop_begin + h)];
          links[p.link_key(hop)].push_back({t.start_cycles[i], t.end_cycles(i), i});
        }
    } else {
      units[2 * op.chip + (op.unit == Unit::mxm ? 0 : 1)].push_back({t.start_cycles[i], t.end_cycles(i), i});
    }
    for (int32_t k = 0; k < op.dep_count; ++k) {
      const auto dep = static_cast<std::size_t>(p.deps[static_cast<std::size_t>(op.dep_begin + k)]);
      if (t.start_cycles[i] < t.end_cycles(dep)) {
        const bool data = p.ops[dep].kind == OpKind::recv || p.ops[dep].kind == OpKind::send;
        throw ScheduleError(std::string(data ? "data used before it arrives: " : "op starts before its input is ready: ") +
                            describe_op(p, t, i) + " starts at cycle " + std::to_string(t.start_cycles[i]) +
                            " but needs " + describe_op(p, t, dep) + ", ready at cycle " + std::to_string(t.end_cycles(dep)));
      }
    }
  }
  auto check = [&](std::unordered_map<int64_t, std::vector<Interval>>& table, bool is_link) {
    for (auto& [key, list] : table) {
      std::sort(list.begin(), list.end(), [](const Interval& a, const Interval& b) {
        return a.start != b.start ? a.start < b.start : a.op < b.op;
      });
      for (std::size_t k = 1; k < list.size(); ++k) {
        if (list[k].start >= list[k - 1].end) continue;
        const std::string where = is_link ? "link " + std::to_string(key / p.network_chips) + "->" + std::to_string(key % p.network_chips)
                                          : "chip " + std::to_string(key / 2) + " " + (key % 2 == 0 ? "MXM" : "VXM");
        throw ScheduleError(where + " is double-booked: " + describe_op(p, t, list[k - 1].op) + " overlaps " +
                            describe_op(p, t, list[k].op));
      }
    }
  };
  check(units, false);
  check(links, true);
}

}  // namespace lpurt::partition
