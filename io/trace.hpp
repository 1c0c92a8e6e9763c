#pragma once
/// \file
/// Chrome trace event format (opens in Perfetto and chrome://tracing): one process per chip, one track
/// per functional unit (MXM, VXM) and one per outgoing link ("link -> chip 9"), times in modelled
/// microseconds. Written through a temporary file and a rename.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "partition/plan.hpp"
#include "partition/schedule.hpp"

namespace lpurt::io {

/// One program run placed on the modelled time axis.
struct TraceSegment {
  std::string name;                       ///< "prefill", "decode 3"
  std::shared_ptr<const partition::Program> program;
  partition::Timeline timeline;
  int64_t offset_cycles = 0;              ///< where the segment starts
};

class TraceWriter {
 public:
  /// `max_events` bounds the file: segments past it are left out (and counted in the metadata).
  TraceWriter(const partition::Plan& plan, int64_t max_events = 2'000'000);
  void add(TraceSegment segment);
  /// Writes the trace to `path` (atomically; replaces an existing file only with `force`).
  void write(const std::string& path, bool force) const;
  int64_t n_events() const { return n_events_; }

 private:
  const partition::Plan& plan_;
  int64_t max_events_;
  int64_t n_events_ = 0;
  int64_t dropped_segments_ = 0;
  std::vector<TraceSegment> segments_;
};

}  // namespace lpurt::io
