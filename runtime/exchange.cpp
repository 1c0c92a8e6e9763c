#include "runtime/exchange.hpp"

#include <algorithm>

namespace lpurt::runtime {

using partition::OpKind;

Exchange build_exchange(const partition::Program& program, const std::vector<int>& owner, int64_t chip_offset, int rank,
                        int64_t trailer_bytes) {
  Exchange e;
  struct Part {
    bool incoming;
    int peer_rank;
    int32_t op;  ///< this rank's op: the send when outgoing, the recv when incoming
    int64_t bytes;
  };
  std::vector<Part> parts;  // [this rank's inter-rank transfers of the current round]
  int32_t round_first_op = -1;

  auto close_round = [&] {
    if (!parts.empty()) {
      // Outgoing before incoming, by peer; stable, so each message keeps program order.
      std::stable_sort(parts.begin(), parts.end(), [](const Part& a, const Part& b) {
        return a.incoming != b.incoming ? b.incoming : a.peer_rank < b.peer_rank;
      });
      Round r;
      r.first_op = round_first_op;
      r.message_begin = static_cast<int32_t>(e.messages.size());
      int64_t outgoing_bytes = 0, incoming_bytes = 0;
      for (const Part& part : parts) {
        if (e.messages.size() == static_cast<std::size_t>(r.message_begin) || e.messages.back().incoming != part.incoming ||
            e.messages.back().peer_rank != part.peer_rank) {
          Message m;
          m.peer_rank = part.peer_rank;
          m.incoming = part.incoming;
          m.tag = round_first_op % 32768;
          m.segment_begin = static_cast<int32_t>(e.segments.size());
          m.offset_bytes = part.incoming ? incoming_bytes : outgoing_bytes;
          e.messages.push_back(m);
        }
        Message& m = e.messages.back();
        e.segments.push_back({part.op, m.bytes});
        ++m.segment_count;
        m.bytes += part.bytes + trailer_bytes;
        (part.incoming ? incoming_bytes : outgoing_bytes) += part.bytes + trailer_bytes;
      }
      r.message_count = static_cast<int32_t>(e.messages.size()) - r.message_begin;
      e.rounds.push_back(r);
      e.max_outgoing_bytes = std::max(e.max_outgoing_bytes, outgoing_bytes);
      e.max_incoming_bytes = std::max(e.max_incoming_bytes, incoming_bytes);
      parts.clear();
    }
    round_first_op = -1;
  };

  for (std::size_t i = 0; i < program.ops.size(); ++i) {
    const partition::Op& op = program.ops[i];
    if (op.kind != OpKind::send && op.kind != OpKind::recv) {
      close_round();
      continue;
    }
    // A send forwarding data received in this round (a collective's later all-gather step) starts the next
    // round: a round's payloads are all packed at its start.
    if (op.kind == OpKind::send && round_first_op >= 0)
      for (int32_t k = 0; k < op.dep_count; ++k)
        if (program.deps[static_cast<std::size_t>(op.dep_begin + k)] >= round_first_op) {
          close_round();
          break;
        }
    if (round_first_op < 0) round_first_op = static_cast<int32_t>(i);
    if (op.kind == OpKind::recv) continue;  // its send stands for the pair
    const int from = owner[static_cast<std::size_t>(op.chip + chip_offset)];
    const int to = owner[static_cast<std::size_t>(op.peer + chip_offset)];
    if (from == to) continue;
    if (from == rank) parts.push_back({false, to, static_cast<int32_t>(i), op.bytes});
    if (to == rank) parts.push_back({true, from, op.match, op.bytes});
  }
  close_round();
  return e;
}

}  // namespace lpurt::runtime
