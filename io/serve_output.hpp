#pragma once
/// \file
/// What `lpurt serve` writes (SPEC "Serving"): the result file, the per-request CSV and the trace.
///
/// Result file (HDF5, written to a temporary name and renamed): the summary as root attributes; group
/// /requests with one dataset per column, one row per request in workload order (`id, arrived_at,
/// first_token_at, finished_at, num_prefill_tokens, num_decode_tokens, replica, slot`, then more), each with
/// a `unit` attribute; in functional runs /requests/tokens (variable-length int32: row i is request i's
/// generated tokens) and /requests/logits float32 [sum of output tokens, vocab] with
/// /requests/logits_row (int64 [requests]: request i's first row), written row by row as produced; and
/// group /timeline: the system-wide counters over time (time_s, queued, active, kv_pages, kv_bytes).
///
/// Trace (Chrome trace-event JSON, Perfetto): one process per replica with one track per request slot
/// (each request's prefill and decode as slices; a preempted one's time in its last slot), one track per pipeline stage (each recorded turn's pass
/// through the stage, partition::stage_slices: the requests moving through the pipeline), its requests'
/// waits in the queue as async slices, a track of its pipeline iterations (decode turns and prefill tokens
/// as arguments), and counter tracks of the queue, the admitted requests and the KV pages in use. Times in
/// modelled microseconds.

#include <cstdint>
#include <string>
#include <vector>

#include "io/atomic_file.hpp"
#include "io/detail/h5.hpp"
#include "io/record.hpp"
#include "io/table.hpp"
#include "partition/serving.hpp"

namespace lpurt::io {

class ServeResultWriter {
 public:
  /// Creates `path`'s temporary file (refuses an existing `path` unless `force`). `logit_rows` is the sum
  /// of the requests' output tokens (0: no logits, as in a timing-only run), each row `vocab_size` floats.
  ServeResultWriter(const std::string& path, bool force, int64_t logit_rows, int64_t vocab_size);
  /// Writes logits row `row`: float [vocab_size].
  void write_logits(int64_t row, const float* values);
  /// Writes the summary, /requests (`columns`, and `tokens` [requests] unless empty, with `logits_row`
  /// [requests] if the file has logits) and /timeline, then renames the file into place.
  void commit(const Record& summary, const std::vector<TableColumn>& columns,
              const std::vector<std::vector<int32_t>>& tokens, const std::vector<int64_t>& logits_row,
              const std::vector<TableColumn>& timeline);

 private:
  AtomicFile file_;
  int64_t logit_rows_, vocab_size_;
  detail::Handle h5_;
  detail::Handle logits_;  ///< /requests/logits, if logit_rows > 0
};

/// The trace of a serving simulation (see the file comment); `stage_slices` of the first turns of
/// outcome.turns through the `stages` stages. `clock_hz` converts cycles; `max_events` bounds the file
/// (iterations past it are left out and counted in the metadata).
void write_serve_trace(const std::string& path, bool force, const partition::ServeOutcome& outcome,
                       const std::vector<partition::StageSlice>& stage_slices, int64_t replicas, int64_t slots,
                       int64_t stages, double clock_hz, int64_t max_events = 2'000'000);

}  // namespace lpurt::io
