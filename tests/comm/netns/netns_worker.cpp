// One rank of the two-host test (multihost_netns_test.sh): joins through the
// environment tandem-run sets, checks that init() picked the backend the
// script expects (TANDEM_EXPECT_BACKEND), then runs the shared collective
// checks across the two network namespaces.
#include <gtest/gtest.h>

#include <cstdlib>

#include "tandem/comm/rendezvous.h"
#include "tests/support/collective_checks.h"

namespace tandem {
namespace {

TEST(TwoHosts, CollectivesAcrossNamespaces) {
  auto comm = init(
      {.backend = Backend::kAuto, .timeout = Millis(60'000), .rendezvous_timeout = Millis(60'000)});
  const char* want = std::getenv("TANDEM_EXPECT_BACKEND");
  ASSERT_NE(want, nullptr) << "TANDEM_EXPECT_BACKEND is not set";
  EXPECT_EQ(comm->backend(), want);
  testing::check_collectives(*comm, {0, 1, 7, 100'003});
}

}  // namespace
}  // namespace tandem
