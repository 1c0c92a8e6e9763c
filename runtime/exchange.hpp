#pragma once
/// \file
/// The MPI messages of one program on one rank. The schedule (partition/schedule.hpp) expands every
/// tensor-parallel collective into chip-to-chip transfers: an all-reduce over tp 8 is 112 transfers. Sent one
/// MPI message each, a stage split over two ranks pays 32 message latencies per collective, thousands per
/// token. Transfers that are consecutive in the program (no compute op of any chip between them, and no
/// send forwarding what an earlier transfer of the round delivered, as a collective's later all-gather
/// steps do) form a round; none of them needs another's data, so a rank can send all of a round's
/// payloads at its start.
/// Within a round, the transfers from rank A to rank B travel as one message: the payloads packed in op
/// order. Rounds are delimited by the global op array, not by one rank's ops, so rank B derives the same
/// message, segment for segment, as rank A.
///
/// Example usage:
/// \code
///   Exchange e = build_exchange(program, owner, replica * plan.chips_per_replica(), rank, 0);
///   for (const Round& r : e.rounds)   // at op r.first_op: pack and send, post the receives
///     for (int32_t m = r.message_begin; m < r.message_begin + r.message_count; ++m) ...
/// \endcode

#include <cstdint>
#include <vector>

#include "partition/schedule.hpp"

namespace lpurt::runtime {

/// One transfer inside a message: on the sending rank the send op, on the receiving rank the recv op.
struct Segment {
  int32_t op = 0;            ///< index into the program's ops
  int64_t offset_bytes = 0;  ///< where its payload starts in the message
};

struct Message {
  int peer_rank = 0;
  bool incoming = false;
  int tag = 0;                ///< the round's first op index mod 32768 (MPI guarantees tags up to 32767)
  int32_t segment_begin = 0;  ///< Exchange::segments[segment_begin, segment_begin + segment_count)
  int32_t segment_count = 0;
  int64_t offset_bytes = 0;   ///< where the message starts in its round's staging area (outgoing or incoming)
  int64_t bytes = 0;          ///< payloads, each followed by trailer_bytes
};

struct Round {
  int32_t first_op = 0;       ///< the round's first op in the program: where it is posted
  int32_t message_begin = 0;  ///< Exchange::messages[message_begin, message_begin + message_count)
  int32_t message_count = 0;
};

struct Exchange {
  std::vector<Round> rounds;      ///< rounds in which this rank sends or receives, in program order
  std::vector<Message> messages;  ///< per round: outgoing by peer rank, then incoming by peer rank
  std::vector<Segment> segments;  ///< per message: in program order
  int64_t max_outgoing_bytes = 0;  ///< the largest round's outgoing messages, together
  int64_t max_incoming_bytes = 0;
};

/// The messages rank `rank` sends and receives running `program` (built for replica 0) on the replica
/// whose chips are offset by `chip_offset`; `owner` maps every chip to its rank. Each payload in a message
/// is followed by `trailer_bytes` (a checksum, when link errors are injected). Transfers between two chips
/// of one rank are not in it: they are copies.
Exchange build_exchange(const partition::Program& program, const std::vector<int>& owner, int64_t chip_offset, int rank,
                        int64_t trailer_bytes);

}  // namespace lpurt::runtime
