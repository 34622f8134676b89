#include "lab/delay_link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "lab/netns_hosts.h"
#include "tests/support/netns.h"

namespace tandem::lab {
namespace {

using tandem::testing::skip_or_fail_without_netns;

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kPort = 29711;
constexpr const char* kNeeds = "root, iproute2 and /dev/net/tun";

// Moves the calling thread into network namespace `ns`.
bool enter(const std::string& ns) {
  const int fd = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::setns(fd, CLONE_NEWNET) == 0;
  ::close(fd);
  return ok;
}

sockaddr_in address_of(const std::string& ip) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(kPort);
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  return a;
}

// Waits up to `timeout` for a datagram on `fd`; its bytes, or "" on timeout.
std::string receive(int fd, milliseconds timeout, sockaddr_in* from = nullptr) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return "";
  char buf[256];
  socklen_t len = sizeof(sockaddr_in);
  const ssize_t n =
      ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(from), from ? &len : nullptr);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

struct Echo {
  std::string reply;
  milliseconds round_trip{0};
  std::string error;
};

// One UDP datagram from host 0 to host 1 and back, each side in a thread of
// its own namespace; host 1 echoes what it gets.
Echo round_trip(const NetnsHosts& hosts) {
  Echo out;
  std::thread server([&] {
    if (!enter(hosts.name(1))) return;
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const sockaddr_in me = address_of(hosts.address(1));
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&me), sizeof me) == 0) {
      sockaddr_in from{};
      const std::string got = receive(fd, milliseconds(10'000), &from);
      if (!got.empty()) {
        ::sendto(fd, got.data(), got.size(), 0, reinterpret_cast<sockaddr*>(&from), sizeof from);
      }
    }
    ::close(fd);
  });
  std::thread client([&] {
    if (!enter(hosts.name(0))) {
      out.error = "cannot enter " + hosts.name(0);
      return;
    }
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const sockaddr_in peer = address_of(hosts.address(1));
    const std::string message = "tandem delay link";
    const auto start = Clock::now();
    // The server may not be bound yet: send again until an answer comes.
    for (int attempt = 0; attempt < 20 && out.reply.empty(); ++attempt) {
      ::sendto(fd, message.data(), message.size(), 0, reinterpret_cast<const sockaddr*>(&peer),
               sizeof peer);
      out.reply = receive(fd, milliseconds(500));
    }
    out.round_trip = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
    ::close(fd);
  });
  client.join();
  server.join();
  return out;
}

// A datagram there and back crosses the link twice, so it takes at least
// twice the delay; it arrives intact, and the link counted its frames.
TEST(DelayLink, HoldsEveryFrameForTheDelayBothWays) {
  NetnsHosts hosts("", milliseconds(40));
  if (!hosts.failure().empty()) return skip_or_fail_without_netns(hosts.failure(), kNeeds);
  const Echo e = round_trip(hosts);
  ASSERT_TRUE(e.error.empty()) << e.error;
  EXPECT_EQ(e.reply, "tandem delay link");
  EXPECT_GE(e.round_trip, milliseconds(80));
}

// Shaped by tbf as well: the link still carries traffic both ways.
TEST(DelayLink, CombinesWithATbfRate) {
  NetnsHosts hosts("1gbit", milliseconds(5));
  if (!hosts.failure().empty()) return skip_or_fail_without_netns(hosts.failure(), kNeeds);
  const Echo e = round_trip(hosts);
  ASSERT_TRUE(e.error.empty()) << e.error;
  EXPECT_EQ(e.reply, "tandem delay link");
  EXPECT_GE(e.round_trip, milliseconds(10));
}

TEST(DelayLink, RefusesANegativeDelay) {
  DelayLink link({"no-such-a", "no-such-b"}, {"tda0", "tdb0"}, std::chrono::microseconds(-1));
  EXPECT_NE(link.failure().find("must be >= 0"), std::string::npos) << link.failure();
}

TEST(DelayLink, NamesAMissingNamespace) {
  DelayLink link({"tandem-no-such-namespace", "x"}, {"tda0", "tdb0"}, milliseconds(1));
  EXPECT_NE(link.failure().find("tandem-no-such-namespace"), std::string::npos) << link.failure();
}

}  // namespace
}  // namespace tandem::lab
