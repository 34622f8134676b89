// NetnsHosts: two "hosts" on this machine, as two network namespaces joined
// by a veth pair, optionally shaped with tc tbf to a rate (both directions).
// The lab measures links and runs Gloo between them; nothing leaves the
// machine, and the addresses (10.213.79.1 and .2) exist only inside the two
// namespaces. Needs root and iproute2 (`ip`, `tc`).
//
// The constructor builds them or records why it could not (failure());
// the destructor kills whatever still runs inside and deletes both
// namespaces. Not thread-safe; nothing collective.
#pragma once

#include <string>
#include <vector>

namespace tandem::lab {

class NetnsHosts {
 public:
  // `rate`: a tc rate ("1gbit", "200mbit"), or "" for an unshaped veth.
  explicit NetnsHosts(const std::string& rate = "");
  ~NetnsHosts();
  NetnsHosts(const NetnsHosts&) = delete;
  NetnsHosts& operator=(const NetnsHosts&) = delete;

  // Empty when the hosts are up, else why they are not.
  const std::string& failure() const { return failure_; }
  // `ip netns exec NS`, to put before a command run on host 0 or 1.
  std::vector<std::string> exec(int host) const;
  std::string address(int host) const;
  std::string interface(int host) const;

 private:
  std::string name_[2];
  std::string failure_;
};

}  // namespace tandem::lab
