#include "tandem/core/trace.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "tandem/core/check.h"

namespace tandem {

TraceRecorder::TraceRecorder(int rank) : rank_(rank), origin_(std::chrono::steady_clock::now()) {}

void TraceRecorder::span(std::string name, std::string lane, TimePoint start, TimePoint end) {
  auto us = [&](TimePoint t) {
    return std::chrono::duration<double, std::micro>(t - origin_).count();
  };
  std::lock_guard<std::mutex> lock(mutex_);
  events_.push_back(Event{std::move(name), std::move(lane), us(start), us(end)});
}

std::vector<TraceRecorder::Event> TraceRecorder::events() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return events_;
}

void TraceRecorder::write(const std::string& path) const {
  nlohmann::json events = nlohmann::json::array();
  for (const auto& e : this->events()) {
    events.push_back({{"name", e.name},
                      {"cat", e.lane},
                      {"ph", "X"},
                      {"pid", rank_},
                      {"tid", e.lane},
                      {"ts", e.start_us},
                      {"dur", e.end_us - e.start_us}});
  }
  std::ofstream out(path);
  TANDEM_CHECK(out.good(), "trace: cannot write '{}'", path);
  out << nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() << "\n";
}

}  // namespace tandem
