#include "lab/netns_hosts.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <optional>

#include "tandem/launch/program.h"

namespace tandem::lab {
namespace {

// Runs a shell command line; its output, or nullopt when it succeeded.
std::optional<std::string> shell(const std::string& command) {
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return "popen failed";
  std::string out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = ::pclose(p);
  if (status == 0) return std::nullopt;
  return out.empty() ? "exit status " + std::to_string(status) : out;
}

// iproute2's tools live in the sbin folders, often not on a user's PATH.
std::string binary(const char* name) {
  try {
    return launch::resolve_program(name, "/usr/sbin:/sbin:/usr/bin:/bin");
  } catch (const launch::ProgramError&) {
    return name;  // the shell then says it is missing, in failure()
  }
}

// tbf passes a burst at line rate before it throttles. A step's messages
// (hundreds of KiB, tens of ms apart) would all fit a large bucket and never
// see the rate, while a sweep of back-to-back messages would: so the bucket
// holds about 1 ms of the rate, small beside the messages, and runs and
// profiles see the same link.
std::string tbf(const std::string& ns, const std::string& dev, const std::string& rate) {
  const bool gigabit = rate.find("gbit") != std::string::npos;
  return fmt::format("{} -n {} qdisc add dev {} root tbf rate {} burst {} latency 100ms",
                     binary("tc"), ns, dev, rate, gigabit ? "128kb" : "32kb");
}

}  // namespace

NetnsHosts::NetnsHosts(const std::string& rate, std::chrono::microseconds delay) {
  if (::geteuid() != 0) {
    failure_ = "network namespaces need root";
    return;
  }
  const std::string id = std::to_string(::getpid());
  name_[0] = "tdm-la-" + id;
  name_[1] = "tdm-lb-" + id;
  const std::string ip = binary("ip");
  const bool delayed = delay.count() > 0;
  if (auto err =
          shell(fmt::format("{0} netns add {1} && {0} netns add {2}", ip, name_[0], name_[1]))) {
    failure_ = "cannot build two hosts in network namespaces: " + *err;
    return;
  }
  std::string script;
  if (delayed) {
    link_ =
        std::make_unique<DelayLink>(std::array<std::string, 2>{name_[0], name_[1]},
                                    std::array<std::string, 2>{interface(0), interface(1)}, delay);
    if (!link_->failure().empty()) {
      failure_ = "cannot build the delayed link between the namespaces: " + link_->failure();
      return;
    }
    // Jumbo frames: fewer for the link's thread to move, and below tbf's
    // smallest bucket (32 KiB), which passes no frame larger than itself.
    script = fmt::format("{0} -n {1} link set {2} mtu 9000 && {0} -n {3} link set {4} mtu 9000", ip,
                         name_[0], interface(0), name_[1], interface(1));
  } else {
    script = fmt::format("{0} link add {2} netns {1} type veth peer name {4} netns {3}", ip,
                         name_[0], interface(0), name_[1], interface(1));
  }
  script += fmt::format(
      " && {0} -n {1} addr add {5}/24 dev {3} && {0} -n {2} addr add {6}/24 dev {4} && "
      "{0} -n {1} link set lo up && {0} -n {2} link set lo up && "
      "{0} -n {1} link set {3} up && {0} -n {2} link set {4} up",
      ip, name_[0], name_[1], interface(0), interface(1), address(0), address(1));
  if (!rate.empty()) {
    script +=
        " && " + tbf(name_[0], interface(0), rate) + " && " + tbf(name_[1], interface(1), rate);
  }
  if (auto err = shell(script)) failure_ = "cannot build two hosts in network namespaces: " + *err;
}

NetnsHosts::~NetnsHosts() {
  link_.reset();  // its devices go with it
  for (const auto& n : name_) {
    if (n.empty()) continue;
    shell(fmt::format("{0} netns pids {1} | xargs -r kill -9; {0} netns del {1}", binary("ip"), n));
  }
}

std::vector<std::string> NetnsHosts::exec(int host) const {
  return {binary("ip"), "netns", "exec", name_[host]};
}

std::string NetnsHosts::address(int host) const {
  return host == 0 ? "10.213.79.1" : "10.213.79.2";
}

std::string NetnsHosts::interface(int host) const {
  return fmt::format("{}{}", host == 0 ? "vla" : "vlb", ::getpid() % 100000);
}

}  // namespace tandem::lab
