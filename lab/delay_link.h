// DelayLink: a link between two network namespaces that holds every frame
// for a fixed time in each direction, as `tc netem delay` would (this
// kernel has no netem). Each namespace gets a TAP device; a thread of this
// process reads each frame the kernel sends out of one and writes it into
// the other once `delay` has passed since it was read. Frames keep their
// order, nothing is dropped, and a tc qdisc on a TAP device (tbf) still
// shapes what leaves its namespace, so rate and latency combine as on a
// real link. Programs in the namespaces see an ordinary Ethernet link.
//
// The constructor creates both devices, or records why it could not
// (failure()); the namespaces must exist and stay until the link is
// destroyed. The destructor stops the thread and closes the devices, which
// removes them. Needs root and /dev/net/tun. Not thread-safe; nothing
// collective.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace tandem::lab {

class DelayLink {
 public:
  // Creates TAP device `devices[i]` in namespace `namespaces[i]` (names as
  // `ip netns` knows them) and starts moving frames between the two.
  DelayLink(const std::array<std::string, 2>& namespaces, const std::array<std::string, 2>& devices,
            std::chrono::microseconds delay);
  ~DelayLink();
  DelayLink(const DelayLink&) = delete;
  DelayLink& operator=(const DelayLink&) = delete;

  // Empty when the link runs, else why it does not.
  const std::string& failure() const { return failure_; }
  // Frames moved so far, both directions.
  uint64_t frames() const { return frames_.load(); }

 private:
  void run();

  const std::chrono::microseconds delay_;
  std::array<int, 2> tap_{-1, -1};
  std::array<int, 2> wake_{-1, -1};  // a pipe: the destructor writes, run() stops
  std::atomic<uint64_t> frames_{0};
  std::string failure_;
  std::thread thread_;
};

}  // namespace tandem::lab
