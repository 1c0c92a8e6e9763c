#pragma once
/// \file
/// Result files, SPEC "Result file (HDF5)": /tokens, /prompt, /logits, the summary as root attributes,
/// and /metrics with per-chip and per-link figures; /text when the run had a tokenizer (io/tokenizer.hpp).
/// Written to a temporary name and renamed.
///
/// The logits ([B, K, vocab] float32, by far the largest output: 8 sequences of 512 tokens over a
/// 32,000-token vocabulary are 524 MB) go to the file row by row as they are produced, so no rank ever
/// holds them whole.
///
/// Example usage:
/// \code
///   ResultWriter out("run.h5", force, batch, n_tokens, vocab_size);   // refuses an existing file
///   out.write_logits(b, k, row);                                       // as each token is generated
///   out.commit(result);                                                // the rest, then the rename
/// \endcode

#include <cstdint>
#include <string>
#include <vector>

#include "io/atomic_file.hpp"
#include "io/detail/h5.hpp"
#include "io/record.hpp"

namespace lpurt::io {

/// One named per-chip (or per-link) column of /metrics, with its unit as an attribute.
struct MetricColumn {
  std::string name;  ///< e.g. "chip_sram_bytes"
  std::string unit;  ///< e.g. "bytes"
  std::vector<double> values;
};

/// Everything of a run but its logits (see ResultWriter).
struct RunResult {
  int64_t batch = 1;            ///< sequences; with 1 the datasets have SPEC's shapes, else a leading [B]
  std::vector<int32_t> prompt;  ///< [B, P]
  std::vector<int32_t> tokens;  ///< [B, K] (empty for a timing-only run)
  std::vector<std::string> texts;  ///< [B] each sequence's generated tokens decoded (UTF-8); empty without a tokenizer
  Record summary;
  std::vector<MetricColumn> metrics;
};

class ResultWriter {
 public:
  /// Creates `path`'s temporary file (AtomicFile: refuses an existing `path` unless `force`) with
  /// /logits [batch, n_tokens, vocab_size] ([n_tokens, vocab_size] for one sequence, as SPEC gives it).
  /// n_tokens is 0 for a run without logits (timing-only, or a sweep's infeasible point).
  ResultWriter(const std::string& path, bool force, int64_t batch, int64_t n_tokens, int64_t vocab_size);
  /// Writes the logits that produced token `token` of sequence `sequence`: row float [vocab_size].
  void write_logits(int64_t sequence, int64_t token, const float* row);
  /// Writes tokens, prompt, summary and metrics (their batch and K must be the constructor's), and /text
  /// if the result has texts: a UTF-8 string (a scalar for one sequence, [B] for a batch). Then closes
  /// the file and renames it into place. Without commit(), the destructor removes the temporary file.
  void commit(const RunResult& result);

 private:
  AtomicFile file_;
  int64_t batch_, n_tokens_, vocab_size_;
  detail::Handle h5_;       ///< the open temporary file
  detail::Handle logits_;   ///< its /logits
};

/// The `--json` object of a run: the summary's fields in order, then `text` if the result has texts
/// (a string for one sequence, a list of B strings for a batch, as /text's shape).
std::string run_json(const RunResult& result);

/// The summary (root attributes) of a result file, in the order it was written. Throws FileError
/// naming the file if it is not a readable HDF5 file.
Record read_result_summary(const std::string& path);

}  // namespace lpurt::io
