#include "io/trace.hpp"

#include <cstdio>
#include <set>

#include "io/atomic_file.hpp"
#include "io/error.hpp"

namespace lpurt::io {

using partition::OpKind;

namespace {
constexpr int mxm_track = 0;
constexpr int vxm_track = 1;
constexpr int link_track_base = 1000;  // + destination chip

class JsonOut {
 public:
  explicit JsonOut(std::FILE* f) : f_(f) {}
  void event(const char* body) {
    std::fprintf(f_, "%s\n%s", first_ ? "" : ",", body);
    first_ = false;
  }

 private:
  std::FILE* f_;
  bool first_ = true;
};
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
    std::FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f) throw FileError(tmp + ": cannot open for writing", ExitCode::io);
    const double us_per_cycle = 1e6 / plan_.hardware.clock_hz;
    char buf[512];
    std::fprintf(f, "{\"displayTimeUnit\": \"ns\", \"otherData\": {\"tool\": \"lpurt\", \"chips\": %lld, \"tp\": %lld, "
                    "\"pp\": %lld, \"topology\": \"%s\", \"segments_left_out\": %lld}, \"traceEvents\": [",
                 static_cast<long long>(plan_.n_chips()), static_cast<long long>(plan_.tp),
                 static_cast<long long>(plan_.pp), plan_.hardware.topology.c_str(), static_cast<long long>(dropped_segments_));
    JsonOut out(f);
    std::set<std::pair<int64_t, int64_t>> link_tracks;
    for (const auto& c : plan_.chips) {
      std::snprintf(buf, sizeof buf,
                    "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %lld, \"args\": {\"name\": \"chip %lld "
                    "(stage %lld, tp %lld)\"}}",
                    static_cast<long long>(c.chip), static_cast<long long>(c.chip), static_cast<long long>(c.stage),
                    static_cast<long long>(c.tp_rank));
      out.event(buf);
      std::snprintf(buf, sizeof buf, "{\"name\": \"process_sort_index\", \"ph\": \"M\", \"pid\": %lld, \"args\": {\"sort_index\": %lld}}",
                    static_cast<long long>(c.chip), static_cast<long long>(c.chip));
      out.event(buf);
      for (auto [tid, name] : {std::pair<int, const char*>{mxm_track, "MXM"}, {vxm_track, "VXM"}}) {
        std::snprintf(buf, sizeof buf, "{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": %lld, \"tid\": %d, \"args\": {\"name\": \"%s\"}}",
                      static_cast<long long>(c.chip), tid, name);
        out.event(buf);
      }
    }
    for (const auto& seg : segments_) {
      const partition::Program& p = *seg.program;
      for (std::size_t i = 0; i < p.ops.size(); ++i) {
        const partition::Op& op = p.ops[i];
        if (op.kind == OpKind::recv) continue;
        const double ts = static_cast<double>(seg.offset_cycles + seg.timeline.start_cycles[i]) * us_per_cycle;
        const double dur = static_cast<double>(seg.timeline.duration_cycles[i]) * us_per_cycle;
        char name[96];
        if (op.layer >= 0) std::snprintf(name, sizeof name, "%s L%d", partition::op_name(op.kind), op.layer);
        else std::snprintf(name, sizeof name, "%s", partition::op_name(op.kind));
        if (op.kind != OpKind::send) {
          std::snprintf(buf, sizeof buf,
                        "{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"X\", \"pid\": %d, \"tid\": %d, \"ts\": %.6f, "
                        "\"dur\": %.6f, \"args\": {\"segment\": \"%s\", \"cycles\": %lld}}",
                        name, seg.name.c_str(), op.chip, op.unit == partition::Unit::mxm ? mxm_track : vxm_track, ts, dur,
                        seg.name.c_str(), static_cast<long long>(seg.timeline.duration_cycles[i]));
          out.event(buf);
          continue;
        }
        for (int32_t h = 0; h < op.hop_count; ++h) {
          const partition::Hop& hop = p.hops[static_cast<std::size_t>(op.hop_begin + h)];
          link_tracks.insert({hop.from, hop.to});
          std::snprintf(buf, sizeof buf,
                        "{\"name\": \"%s %s\", \"cat\": \"link\", \"ph\": \"X\", \"pid\": %lld, \"tid\": %lld, \"ts\": %.6f, "
                        "\"dur\": %.6f, \"args\": {\"from_chip\": %d, \"to_chip\": %d, \"bytes\": %lld, \"hops\": %d, "
                        "\"segment\": \"%s\"}}",
                        partition::payload_name(op.payload), op.layer >= 0 ? ("L" + std::to_string(op.layer)).c_str() : "",
                        static_cast<long long>(hop.from), static_cast<long long>(link_track_base + hop.to), ts, dur, op.chip,
                        op.peer, static_cast<long long>(op.bytes), op.hop_count, seg.name.c_str());
          out.event(buf);
        }
      }
    }
    for (auto [from, to] : link_tracks) {
      std::snprintf(buf, sizeof buf, "{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": %lld, \"tid\": %lld, \"args\": {\"name\": \"link -> chip %lld\"}}",
                    static_cast<long long>(from), static_cast<long long>(link_track_base + to), static_cast<long long>(to));
      out.event(buf);
    }
    std::fprintf(f, "\n]}\n");
    if (std::fclose(f) != 0) throw FileError(tmp + ": write failed", ExitCode::io);
  });
}

}  // namespace lpurt::io
