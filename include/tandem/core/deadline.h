// Deadlines and bounded waiting. Every blocking call in Tandem turns its
// timeout into a Deadline and checks it on each turn of its wait loop; there
// is no "forever". Backoff spins briefly, then yields, then sleeps, so that
// ranks oversubscribing the cores do not steal each other's CPU.
// Thread-compatible: one object per waiting thread.
#pragma once

#include <chrono>
#include <string_view>

namespace tandem {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

// The communicator default (300 s), as in torch.distributed's Gloo backend.
inline constexpr Millis kDefaultTimeout{300'000};

class Deadline {
 public:
  // Throws InvalidArgument unless timeout > 0; `what` names the setting for
  // the message (e.g. "CommOptions::timeout").
  Deadline(Millis timeout, std::string_view what = "timeout");

  bool expired() const { return Clock::now() >= at_; }
  Millis timeout() const { return timeout_; }
  Millis elapsed() const;
  Millis remaining() const;
  Clock::time_point at() const { return at_; }

 private:
  Clock::time_point start_;
  Clock::time_point at_;
  Millis timeout_;
};

// Polling with backoff: the first calls to pause() spin, then yield, then
// sleep with a growing interval capped at `max_sleep`.
class Backoff {
 public:
  explicit Backoff(int spins = 2000,
                   std::chrono::microseconds max_sleep = std::chrono::microseconds(1000));
  void pause();
  void reset() { turns_ = 0; }

 private:
  int spins_;
  std::chrono::microseconds max_sleep_;
  int turns_ = 0;
};

// "12.3 s" / "250 ms": durations as people read them in messages.
std::string format_duration(Millis d);

}  // namespace tandem
