#include "io/serve_output.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "io/detail/event_stream.hpp"
#include "io/error.hpp"

namespace lpurt::io {

using detail::check;
using detail::Handle;

ServeResultWriter::ServeResultWriter(const std::string& path, bool force, int64_t logit_rows, int64_t vocab_size)
    : file_(path, force), logit_rows_(logit_rows), vocab_size_(vocab_size) {
  try {
    h5_ = detail::create_file(file_.temporary_path());
    Handle requests = detail::create_group(h5_.get(), "requests", file_.temporary_path());
    if (logit_rows > 0) {
      const hsize_t dims[2] = {static_cast<hsize_t>(logit_rows), static_cast<hsize_t>(vocab_size)};
      Handle space(check(H5Screate_simple(2, dims, nullptr), "H5Screate_simple"), H5Sclose);
      logits_ = Handle(check(H5Dcreate2(requests.get(), "logits", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                                        H5P_DEFAULT),
                             "cannot create dataset /requests/logits"),
                       H5Dclose);
    }
  } catch (const Error& e) {
    throw FileError(path + ": cannot write: " + e.what(), ExitCode::io);
  }
}

void ServeResultWriter::write_logits(int64_t row, const float* values) {
  LPURT_ASSERT(row >= 0 && row < logit_rows_);
  try {
    const hsize_t start[2] = {static_cast<hsize_t>(row), 0}, count[2] = {1, static_cast<hsize_t>(vocab_size_)};
    Handle file_space(check(H5Dget_space(logits_.get()), "H5Dget_space"), H5Sclose);
    check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), "H5Sselect_hyperslab");
    const hsize_t row_elems = static_cast<hsize_t>(vocab_size_);
    Handle row_space(check(H5Screate_simple(1, &row_elems, nullptr), "H5Screate_simple"), H5Sclose);
    check(H5Dwrite(logits_.get(), H5T_NATIVE_FLOAT, row_space.get(), file_space.get(), H5P_DEFAULT, values),
          "cannot write logits row " + std::to_string(row));
  } catch (const Error& e) {
    throw FileError(file_.path() + ": cannot write: " + e.what(), ExitCode::io);
  }
}

namespace {

/// One dataset per column, each with its unit.
void write_columns(hid_t group, const std::vector<TableColumn>& columns, const std::string& where) {
  for (const TableColumn& c : columns) {
    if (c.kind == TableColumn::Kind::integer) {
      detail::write_dataset(group, c.name, H5T_STD_I64LE, H5T_NATIVE_INT64, {c.integers.size()}, c.integers.data());
    } else if (c.kind == TableColumn::Kind::real) {
      detail::write_dataset(group, c.name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, {c.reals.size()}, c.reals.data());
    } else {
      const Handle type = detail::utf8_string_type();
      std::vector<const char*> texts;
      for (const auto& t : c.texts) texts.push_back(t.c_str());
      detail::write_dataset(group, c.name, type.get(), type.get(), {texts.size()}, texts.data());
    }
    Handle ds(check(H5Dopen2(group, c.name.c_str(), H5P_DEFAULT), where + ": cannot open " + c.name), H5Dclose);
    detail::write_scalar_attribute(ds.get(), "unit", c.unit);
  }
}

}  // namespace

void ServeResultWriter::commit(const Record& summary, const std::vector<TableColumn>& columns,
                               const std::vector<std::vector<int32_t>>& tokens, const std::vector<int64_t>& logits_row,
                               const std::vector<TableColumn>& timeline) {
  try {
    const hid_t f = h5_.get();
    const std::string& tmp = file_.temporary_path();
    {
      Handle root = detail::open_group(f, "/", tmp);
      detail::write_scalar_attribute(root.get(), "format", std::string("lpurt-serve-result"));
      for (const auto& [key, value] : summary.fields()) detail::write_scalar_attribute(root.get(), key, value);
      Handle requests = detail::open_group(f, "requests", tmp);
      write_columns(requests.get(), columns, tmp);
      if (!tokens.empty()) {
        std::vector<hvl_t> rows(tokens.size());
        for (std::size_t i = 0; i < tokens.size(); ++i)
          rows[i] = {tokens[i].size(), const_cast<int32_t*>(tokens[i].data())};
        Handle file_type(check(H5Tvlen_create(H5T_STD_I32LE), "H5Tvlen_create"), H5Tclose);
        Handle mem_type(check(H5Tvlen_create(H5T_NATIVE_INT32), "H5Tvlen_create"), H5Tclose);
        detail::write_dataset(requests.get(), "tokens", file_type.get(), mem_type.get(), {rows.size()}, rows.data());
      }
      if (logit_rows_ > 0)
        detail::write_dataset(requests.get(), "logits_row", H5T_STD_I64LE, H5T_NATIVE_INT64, {logits_row.size()},
                              logits_row.data());
      Handle series = detail::create_group(f, "timeline", tmp);
      write_columns(series.get(), timeline, tmp);
    }
    check(logits_.close(), tmp + ": cannot close /requests/logits");
    check(h5_.close(), tmp + ": cannot close the file");
  } catch (const Error& e) {
    throw FileError(file_.path() + ": cannot write: " + e.what(), ExitCode::io);
  }
  file_.commit();
}

namespace {

using Json = nlohmann::ordered_json;

using detail::EventStream;

}  // namespace

void write_serve_trace(const std::string& path, bool force, const partition::ServeOutcome& outcome,
                       const std::vector<partition::StageSlice>& stage_slices, int64_t replicas, int64_t slots,
                       int64_t stages, double clock_hz, int64_t max_events) {
  write_atomically(path, force, [&](const std::string& tmp) {
    std::ofstream f(tmp);
    if (!f) throw FileError(tmp + ": cannot open for writing", ExitCode::io);
    const double us_per_cycle = 1e6 / clock_hz;
    auto us = [&](int64_t cycles) { return static_cast<double>(cycles) * us_per_cycle; };
    const int64_t system_pid = replicas;  // the counters' process, after the replicas
    constexpr int64_t iteration_tid = 0, first_slot_tid = 1;
    const int64_t first_stage_tid = first_slot_tid + slots;
    // Events per request (up to 2 slices and an async pair), per sample and per stage slice (bounded by the
    // caller) are written whole; iterations fill what the bound leaves.
    const auto fixed_events = static_cast<int64_t>(4 * outcome.requests.size() + 3 * outcome.samples.size() +
                                                   stage_slices.size());
    const int64_t iterations_kept = std::min<int64_t>(static_cast<int64_t>(outcome.iterations.size()),
                                                      std::max<int64_t>(0, max_events - fixed_events));
    const Json other = {{"tool", "lpurt serve"},
                        {"replicas", replicas},
                        {"slots", slots},
                        {"iterations", outcome.n_iterations},
                        {"iterations_left_out", outcome.n_iterations - iterations_kept},
                        {"stages", stages},
                        {"turns", outcome.n_turns},
                        {"turns_through_stages",
                         static_cast<int64_t>(stage_slices.size()) / std::max<int64_t>(1, stages)}};
    f << "{\"displayTimeUnit\": \"ns\", \"otherData\": " << other.dump(-1, ' ', false, Json::error_handler_t::replace)
      << ", \"traceEvents\": [";
    EventStream out(f);
    auto name_thread = [&](int64_t pid, int64_t tid, const std::string& name) {
      out.add({{"name", "thread_name"}, {"ph", "M"}, {"pid", pid}, {"tid", tid}, {"args", {{"name", name}}}});
      out.add(
          {{"name", "thread_sort_index"}, {"ph", "M"}, {"pid", pid}, {"tid", tid}, {"args", {{"sort_index", tid}}}});
    };
    for (int64_t r = 0; r < replicas; ++r) {
      out.add(
          {{"name", "process_name"}, {"ph", "M"}, {"pid", r}, {"args", {{"name", "replica " + std::to_string(r)}}}});
      out.add({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", r}, {"args", {{"sort_index", r}}}});
      name_thread(r, iteration_tid, "pipeline iterations");
      for (int64_t s = 0; s < slots; ++s) name_thread(r, first_slot_tid + s, "slot " + std::to_string(s));
      for (int64_t s = 0; s < stages; ++s) name_thread(r, first_stage_tid + s, "stage " + std::to_string(s));
    }
    out.add({{"name", "process_name"}, {"ph", "M"}, {"pid", system_pid}, {"args", {{"name", "system"}}}});
    out.add({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", system_pid}, {"args", {{"sort_index", system_pid}}}});

    // A slot's requests, in admission order: a request's slices end no later than the next admission to
    // its slot (its last token may still be in the pipeline when the slot is given to the next one).
    std::map<std::pair<int64_t, int64_t>, std::vector<std::size_t>> by_slot;
    for (std::size_t i = 0; i < outcome.requests.size(); ++i) {
      const partition::RequestOutcome& o = outcome.requests[i];
      if (!o.rejected && o.slot >= 0) by_slot[{o.replica, o.slot}].push_back(i);
    }
    for (auto& [where, ids] : by_slot) {
      std::stable_sort(ids.begin(), ids.end(), [&](std::size_t a, std::size_t b) {
        return outcome.requests[a].resumed_cycles < outcome.requests[b].resumed_cycles;
      });
      for (std::size_t k = 0; k < ids.size(); ++k) {
        const partition::RequestOutcome& o = outcome.requests[ids[k]];
        const int64_t limit =
            k + 1 < ids.size() ? outcome.requests[ids[k + 1]].resumed_cycles : std::numeric_limits<int64_t>::max();
        const std::string name = "request " + std::to_string(ids[k]);
        const Json args = {{"request", ids[k]},
                           {"arrived_us", us(o.arrived_cycles)},
                           {"first_token_us", us(o.first_token_cycles)},
                           {"finished_us", us(o.finished_cycles)},
                           {"preemptions", o.preemptions}};
        // A slice of the request on its slot's track, from `begin_cycles` to `end_cycles` (C++17 lambdas
        // cannot capture the structured binding itself).
        const int64_t pid = where.first, tid = first_slot_tid + where.second;
        auto slot_slice = [&](const char* phase, int64_t begin_cycles, int64_t end_cycles) {
          out.add({{"name", name + " " + phase},
                   {"cat", phase},
                   {"ph", "X"},
                   {"pid", pid},
                   {"tid", tid},
                   {"ts", us(begin_cycles)},
                   {"dur", us(end_cycles - begin_cycles)},
                   {"args", args}});
        };
        if (o.preemptions > 0) {
          // Preempted: its slot is the one it finished in, from its last admission (its recompute and the
          // rest of its decode); its earlier slots are not drawn.
          slot_slice("resumed", o.resumed_cycles, std::min(o.finished_cycles, limit));
          continue;
        }
        const int64_t first = std::min(o.first_token_cycles, limit), last = std::min(o.finished_cycles, limit);
        slot_slice("prefill", o.admitted_cycles, first);
        if (last > first) slot_slice("decode", first, last);
      }
    }
    for (std::size_t i = 0; i < outcome.requests.size(); ++i) {
      const partition::RequestOutcome& o = outcome.requests[i];
      if (o.rejected || o.admitted_cycles <= o.arrived_cycles) continue;
      const Json base = {{"name", "queued"},
                         {"cat", "queue"},
                         {"id", static_cast<int64_t>(i)},
                         {"pid", o.replica},
                         {"tid", iteration_tid}};
      Json begin = base, end = base;
      begin["ph"] = "b", begin["ts"] = us(o.arrived_cycles), begin["args"] = {{"request", i}};
      end["ph"] = "e", end["ts"] = us(o.admitted_cycles);
      out.add(begin);
      out.add(end);
    }
    for (const partition::StageSlice& slice : stage_slices) {
      const partition::Turn& turn = outcome.turns[static_cast<std::size_t>(slice.turn)];
      out.add({{"name", "request " + std::to_string(turn.request)},
               {"cat", "stage"},
               {"ph", "X"},
               {"pid", turn.replica},
               {"tid", first_stage_tid + slice.stage},
               {"ts", us(slice.start_cycles)},
               {"dur", us(slice.end_cycles - slice.start_cycles)},
               {"args", {{"request", turn.request}, {"position", turn.position}, {"tokens", turn.n_tokens}}}});
    }
    for (int64_t k = 0; k < iterations_kept; ++k) {
      const partition::IterationRecord& it = outcome.iterations[static_cast<std::size_t>(k)];
      out.add({{"name", it.decode_turns > 0 ? "decode + prefill" : "prefill"},
               {"cat", "iteration"},
               {"ph", "X"},
               {"pid", it.replica},
               {"tid", iteration_tid},
               {"ts", us(it.start_cycles)},
               {"dur", us(it.period_cycles)},
               {"args", {{"decode_turns", it.decode_turns}, {"prefill_tokens", it.prefill_tokens}}}});
    }
    for (const partition::ServeSample& s : outcome.samples) {
      out.add({{"name", "queued requests"},
               {"ph", "C"},
               {"pid", system_pid},
               {"ts", us(s.cycles)},
               {"args", {{"queued", s.queued}}}});
      out.add({{"name", "admitted requests"},
               {"ph", "C"},
               {"pid", system_pid},
               {"ts", us(s.cycles)},
               {"args", {{"active", s.active}}}});
      out.add({{"name", "KV pages in use"},
               {"ph", "C"},
               {"pid", system_pid},
               {"ts", us(s.cycles)},
               {"args", {{"pages", s.kv_pages}}}});
    }
    f << "\n]}\n";
    f.close();
    if (!f) throw FileError(tmp + ": write failed", ExitCode::io);
  });
}

}  // namespace lpurt::io
