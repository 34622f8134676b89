// NetnsHosts: two "hosts" on this machine, as two network namespaces joined
// by a veth pair, optionally shaped with tc tbf to a rate (both directions);
// with a delay, joined instead by a DelayLink (two TAP devices whose frames
// a thread of this process holds for the delay), shaped the same way.
// The lab measures links and runs Gloo between them; nothing leaves the
// machine, and the addresses (10.213.79.1 and .2) exist only inside the two
// namespaces. Needs root and iproute2 (`ip`, `tc`).
//
// The constructor builds them or records why it could not (failure());
// the destructor kills whatever still runs inside and deletes both
// namespaces. Not thread-safe; nothing collective.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "lab/delay_link.h"

namespace tandem::lab {

class NetnsHosts {
 public:
  // `rate`: a tc rate ("1gbit", "200mbit"), or "" for an unshaped link.
  // `delay`: one-way latency added to every frame (0: a plain veth).
  explicit NetnsHosts(const std::string& rate = "",
                      std::chrono::microseconds delay = std::chrono::microseconds(0));
  ~NetnsHosts();
  NetnsHosts(const NetnsHosts&) = delete;
  NetnsHosts& operator=(const NetnsHosts&) = delete;

  // Empty when the hosts are up, else why they are not.
  const std::string& failure() const { return failure_; }
  // `ip netns exec NS`, to put before a command run on host 0 or 1.
  std::vector<std::string> exec(int host) const;
  std::string address(int host) const;
  // The namespace's name, as `ip netns` knows it (/var/run/netns/NAME).
  const std::string& name(int host) const { return name_[host]; }
  std::string interface(int host) const;

 private:
  std::string name_[2];
  std::string failure_;
  std::unique_ptr<DelayLink> link_;  // with a delay; destroyed before the namespaces
};

}  // namespace tandem::lab
