// The rule for tests that need network namespaces (lab/netns_hosts.h): where
// the hosts could not be built, the test fails, since CI runs as root and
// has them, unless TANDEM_SKIP_NETNS=1 opts out explicitly.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace tandem::testing {

// Skips (under TANDEM_SKIP_NETNS=1) or fails the current test, naming
// `failure` (why the hosts are missing) and `needs` (what the test needs,
// e.g. "root and iproute2"). The caller returns right after.
inline void skip_or_fail_without_netns(const std::string& failure, const std::string& needs) {
  const char* skip = std::getenv("TANDEM_SKIP_NETNS");
  if (skip && std::string(skip) == "1") GTEST_SKIP() << failure;
  FAIL() << failure << "; this test needs " << needs
         << " (CI has them), or TANDEM_SKIP_NETNS=1 to skip it";
}

}  // namespace tandem::testing
