#pragma once
/// \file
/// The traceEvents array of a Chrome trace (Perfetto, chrome://tracing), written one event at a time: a
/// trace may hold millions of events, so no document is built in memory. Invalid UTF-8 in a name becomes
/// U+FFFD, so the file stays valid JSON. Used by the schedule trace (io/trace) and the serving trace
/// (io/serve_output).

#include <cstdint>
#include <ostream>

#include <nlohmann/json.hpp>

namespace lpurt::io::detail {

class EventStream {
 public:
  using Json = nlohmann::ordered_json;

  explicit EventStream(std::ostream& out) : out_(out) {}
  void add(const Json& event) {
    out_ << (first_ ? "\n" : ",\n") << event.dump(-1, ' ', false, Json::error_handler_t::replace);
    first_ = false;
    ++n_;
  }
  int64_t size() const { return n_; }

 private:
  std::ostream& out_;
  bool first_ = true;
  int64_t n_ = 0;
};

}  // namespace lpurt::io::detail
