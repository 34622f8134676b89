#include "lab/delay_link.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <optional>
#include <vector>

namespace tandem::lab {
namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text() { return std::strerror(errno); }

// Opens TAP device `dev` inside namespace `ns`. A device belongs to the
// network namespace of the thread that creates it, so a thread of its own
// enters `ns` and creates it; the descriptor outlives that thread.
int open_tap(const std::string& ns, const std::string& dev, std::string& error) {
  int fd = -1;
  std::thread([&] {
    const std::string path = "/var/run/netns/" + ns;
    const int ns_fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) {
      error = fmt::format("cannot open namespace {}: {}", path, errno_text());
      return;
    }
    const int entered = ::setns(ns_fd, CLONE_NEWNET);
    ::close(ns_fd);
    if (entered != 0) {
      error = fmt::format("cannot enter namespace {}: {}", ns, errno_text());
      return;
    }
    const int tun = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (tun < 0) {
      error = fmt::format("cannot open /dev/net/tun: {}", errno_text());
      return;
    }
    ifreq request{};
    request.ifr_flags = IFF_TAP | IFF_NO_PI;
    std::strncpy(request.ifr_name, dev.c_str(), IFNAMSIZ - 1);
    if (::ioctl(tun, TUNSETIFF, &request) != 0) {
      error = fmt::format("cannot create TAP device {} in {}: {}", dev, ns, errno_text());
      ::close(tun);
      return;
    }
    fd = tun;
  }).join();
  return fd;
}

struct Frame {
  Clock::time_point due;
  std::vector<char> bytes;
};

}  // namespace

DelayLink::DelayLink(const std::array<std::string, 2>& namespaces,
                     const std::array<std::string, 2>& devices, std::chrono::microseconds delay)
    : delay_(delay) {
  if (delay.count() < 0) {
    failure_ = fmt::format("a link's delay must be >= 0 (got {} us)", delay.count());
    return;
  }
  for (int i = 0; i < 2; ++i) {
    tap_[i] = open_tap(namespaces[i], devices[i], failure_);
    if (tap_[i] < 0) return;
  }
  if (::pipe2(wake_.data(), O_CLOEXEC | O_NONBLOCK) != 0) {
    failure_ = "cannot create a pipe: " + errno_text();
    return;
  }
  thread_ = std::thread([this] { run(); });
}

DelayLink::~DelayLink() {
  if (thread_.joinable()) {
    const char stop = 1;
    if (::write(wake_[1], &stop, 1) != 1) {
      // A full or broken pipe still wakes the poll: run() sees it readable.
    }
    thread_.join();
  }
  for (int fd : {tap_[0], tap_[1], wake_[0], wake_[1]}) {
    if (fd >= 0) ::close(fd);
  }
}

// Frames read from TAP i wait in held[i] until due, then go into TAP 1 - i.
// One frame at most 64 KiB: the devices' MTU (set by their owner) is below.
void DelayLink::run() {
  std::array<std::deque<Frame>, 2> held;
  std::vector<char> buffer(64 * 1024);
  while (true) {
    std::optional<Clock::time_point> next;
    for (const auto& q : held) {
      if (!q.empty() && (!next || q.front().due < *next)) next = q.front().due;
    }
    timespec wait{};
    if (next) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::max(Clock::duration::zero(), *next - Clock::now()));
      wait.tv_sec = static_cast<time_t>(ns.count() / 1'000'000'000);
      wait.tv_nsec = static_cast<long>(ns.count() % 1'000'000'000);
    }
    pollfd fds[3] = {{tap_[0], POLLIN, 0}, {tap_[1], POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::ppoll(fds, 3, next ? &wait : nullptr, nullptr) < 0 && errno != EINTR) return;
    if (fds[2].revents != 0) return;
    for (int i = 0; i < 2; ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      while (true) {
        const ssize_t n = ::read(tap_[i], buffer.data(), buffer.size());
        if (n <= 0) break;  // EAGAIN: drained
        held[i].push_back({Clock::now() + delay_, {buffer.begin(), buffer.begin() + n}});
      }
    }
    const auto now = Clock::now();
    for (int i = 0; i < 2; ++i) {
      while (!held[i].empty() && held[i].front().due <= now) {
        const auto& f = held[i].front().bytes;
        if (::write(tap_[1 - i], f.data(), f.size()) == static_cast<ssize_t>(f.size())) {
          ++frames_;
        }  // else the frame is lost, as on a congested link; TCP sends it again
        held[i].pop_front();
      }
    }
  }
}

}  // namespace tandem::lab
