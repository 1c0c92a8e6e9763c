#pragma once
/// \file
/// Result files, SPEC "Result file (HDF5)": /tokens, /prompt, /logits, the summary as root attributes,
/// and /metrics with per-chip and per-link figures. Written to a temporary name and renamed.

#include <cstdint>
#include <string>
#include <vector>

#include "io/record.hpp"

namespace lpurt::io {

/// One named per-chip (or per-link) column of /metrics, with its unit as an attribute.
struct MetricColumn {
  std::string name;  ///< e.g. "chip_sram_bytes"
  std::string unit;  ///< e.g. "bytes"
  std::vector<double> values;
};

struct RunResult {
  int64_t batch = 1;            ///< sequences; with 1 the datasets have SPEC's shapes, else a leading [B]
  std::vector<int32_t> prompt;  ///< [B, P]
  std::vector<int32_t> tokens;  ///< [B, K] (empty for a timing-only run)
  std::vector<float> logits;    ///< [B, K, vocab]
  int64_t vocab_size = 0;
  Record summary;
  std::vector<MetricColumn> metrics;
};

/// Writes `result` to `path` through `path.tmp.<pid>` and an atomic rename. Refuses to replace an
/// existing file unless `force`.
void write_result_file(const std::string& path, const RunResult& result, bool force);

/// The summary (root attributes) of a result file, in the order it was written. Throws FileError
/// naming the file if it is not a readable HDF5 file.
Record read_result_summary(const std::string& path);

}  // namespace lpurt::io
