// TraceRecorder: collects spans as Chrome trace events and writes them as
// JSON ({"traceEvents": [...]}), viewable in Perfetto or chrome://tracing.
// One recorder per rank (its rank is the trace's pid; `lane` is the tid, so
// compute and communication show as separate rows). Thread-safe.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

namespace tandem {

class TraceRecorder {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  explicit TraceRecorder(int rank);

  // Records a complete event ("ph": "X") from `start` to `end`.
  void span(std::string name, std::string lane, TimePoint start, TimePoint end);

  // Writes every event so far to `path` (throws tandem::Error naming the
  // path if it cannot be written).
  void write(const std::string& path) const;

  // Events so far, for tests: name, lane, start and end in microseconds since
  // the recorder was made.
  struct Event {
    std::string name;
    std::string lane;
    double start_us;
    double end_us;
  };
  std::vector<Event> events() const;

 private:
  const int rank_;
  const TimePoint origin_;
  mutable std::mutex mutex_;
  std::vector<Event> events_;  // guarded by mutex_
};

}  // namespace tandem
