#include "io/trace.hpp"

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "io/detail/event_stream.hpp"
#include "io/atomic_file.hpp"
#include "io/error.hpp"

namespace lpurt::io {

using partition::OpKind;

namespace {
constexpr int mxm_track = 0;
constexpr int vxm_track = 1;
constexpr int link_track_base = 1000;  // + destination chip

using Json = nlohmann::ordered_json;

using detail::EventStream;

Json thread_name(int64_t pid, int64_t tid, const std::string& name) {
  return {{"name", "thread_name"}, {"ph", "M"}, {"pid", pid}, {"tid", tid}, {"args", {{"name", name}}}};
}
}  // namespace

TraceWriter::TraceWriter(const partition::Plan& plan, int64_t max_events) : plan_(plan), max_events_(max_events) {}

void TraceWriter::add(TraceSegment segment) {
  int64_t events = 0;
  for (const auto& op : segment.program->ops) events += op.kind == OpKind::recv ? 0 : std::max<int32_t>(1, op.hop_count);
  if (n_events_ + events > max_events_) {
    ++dropped_segments_;
    return;
  }
  n_events_ += events;
  segments_.push_back(std::move(segment));
}

void TraceWriter::write(const std::string& path, bool force) const {
  write_atomically(path, force, [&](const std::string& tmp) {
    std::ofstream f(tmp);
    if (!f) throw FileError(tmp + ": cannot open for writing", ExitCode::io);
    const double us_per_cycle = 1e6 / plan_.hardware.clock_hz;
    const Json other = {{"tool", "lpurt"},
                        {"chips", plan_.n_chips()},
                        {"tp", plan_.tp},
                        {"pp", plan_.pp},
                        {"topology", plan_.hardware.topology},
                        {"segments_left_out", dropped_segments_}};
    f << "{\"displayTimeUnit\": \"ns\", \"otherData\": " << other.dump(-1, ' ', false, Json::error_handler_t::replace)
      << ", \"traceEvents\": [";
    EventStream out(f);
    std::set<std::pair<int64_t, int64_t>> link_tracks;
    for (const auto& c : plan_.chips) {
      // Processes are network chips, so that a link's track sits under the chip it leaves.
      const int64_t pid = c.network_chip;
      const std::string name = "chip " + std::to_string(c.chip) +
                               (pid != c.chip ? " at network chip " + std::to_string(pid) : std::string()) + " (stage " +
                               std::to_string(c.stage) + ", tp " + std::to_string(c.tp_rank) + ")";
      out.add({{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"args", {{"name", name}}}});
      out.add({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", pid}, {"args", {{"sort_index", pid}}}});
      out.add(thread_name(pid, mxm_track, "MXM"));
      out.add(thread_name(pid, vxm_track, "VXM"));
    }
    for (const auto& seg : segments_) {
      const partition::Program& p = *seg.program;
      for (std::size_t i = 0; i < p.ops.size(); ++i) {
        const partition::Op& op = p.ops[i];
        if (op.kind == OpKind::recv) continue;
        const double ts_us = static_cast<double>(seg.offset_cycles + seg.timeline.start_cycles[i]) * us_per_cycle;
        const double dur_us = static_cast<double>(seg.timeline.duration_cycles[i]) * us_per_cycle;
        const std::string layer = op.layer >= 0 ? "L" + std::to_string(op.layer) : "";
        if (op.kind != OpKind::send) {
          const std::string name = std::string(partition::op_name(op.kind)) + (layer.empty() ? "" : " " + layer);
          out.add({{"name", name},
                   {"cat", seg.name},
                   {"ph", "X"},
                   {"pid", plan_.network_chip(op.chip)},
                   {"tid", op.unit == partition::Unit::mxm ? mxm_track : vxm_track},
                   {"ts", ts_us},
                   {"dur", dur_us},
                   {"args", {{"segment", seg.name}, {"cycles", seg.timeline.duration_cycles[i]}}}});
          continue;
        }
        for (int32_t h = 0; h < op.hop_count; ++h) {
          const partition::Hop& hop = p.hops[static_cast<std::size_t>(op.hop_begin + h)];
          link_tracks.insert({hop.from, hop.to});
          out.add({{"name", std::string(partition::payload_name(op.payload)) + " " + layer},
                   {"cat", "link"},
                   {"ph", "X"},
                   {"pid", hop.from},
                   {"tid", link_track_base + hop.to},
                   {"ts", ts_us},
                   {"dur", dur_us},
                   {"args",
                    {{"from_chip", op.chip},
                     {"to_chip", op.peer},
                     {"bytes", partition::link_bytes(op, plan_.hardware)},
                     {"host_bytes", op.bytes},
                     {"hops", op.hop_count},
                     {"segment", seg.name}}}});
        }
      }
    }
    for (const auto& [from, to] : link_tracks)
      out.add(thread_name(from, link_track_base + to, "link -> chip " + std::to_string(to)));
    f << "\n]}\n";
    f.close();
    if (!f) throw FileError(tmp + ": write failed", ExitCode::io);
  });
}

}  // namespace lpurt::io
