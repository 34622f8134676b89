// The fork-per-rank harness (tests/support/multiproc.h) on itself: a rank
// that outlives the deadline, a rank killed by a signal and a rank whose
// assertions fail each make the result a failure, and expect_ranks_succeed
// reports it, so a hang or a crash can never pass a test.
#include "tests/support/multiproc.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <thread>

namespace tandem::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Rank 1 sleeps far past the harness's 1 s deadline; rank 0 returns.
void sleeper(int rank, int, int) {
  if (rank == 1) std::this_thread::sleep_for(seconds(120));
}

// Rank 1 dies by SIGKILL, which it raises on itself.
void suicide(int rank, int, int) {
  if (rank == 1) raise(SIGKILL);
}

void failing_assertion(int rank, int, int) { EXPECT_EQ(rank, 0); }

TEST(MultiprocHarness, ARankPastTheDeadlineFails) {
  const auto start = std::chrono::steady_clock::now();
  auto results = run_ranks(2, sleeper, {.timeout = milliseconds(1000), .env = {}});
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(30));
  ASSERT_EQ(results.size(), 2u);
  EXPECT_TRUE(results[0].ok()) << results[0].how();
  EXPECT_TRUE(results[1].timed_out);
  EXPECT_FALSE(results[1].ok());
  EXPECT_NE(results[1].exit_code, 0);
  EXPECT_EQ(results[1].signal, SIGKILL);
}

TEST(MultiprocHarness, ARankKilledByASignalFails) {
  auto results = run_ranks(2, suicide, {.timeout = seconds(30), .env = {}});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_TRUE(results[0].ok()) << results[0].how();
  EXPECT_EQ(results[1].signal, SIGKILL);
  EXPECT_FALSE(results[1].timed_out);
  EXPECT_FALSE(results[1].ok());
  EXPECT_NE(results[1].exit_code, 0);
}

TEST(MultiprocHarness, ARankWithAFailedAssertionFails) {
  auto results = run_ranks(2, failing_assertion, {.timeout = seconds(30), .env = {}});
  EXPECT_TRUE(results[0].ok()) << results[0].how();
  EXPECT_EQ(results[1].exit_code, 1);
  EXPECT_NE(results[1].output.find("Expected equality"), std::string::npos) << results[1].output;
}

TEST(MultiprocHarness, ExpectRanksSucceedReportsHangsAndSignals) {
  EXPECT_NONFATAL_FAILURE(
      expect_ranks_succeed(2, sleeper, {.timeout = std::chrono::milliseconds(1000), .env = {}}),
      "rank 1 failed (still running at the deadline (SIGKILLed))");
  EXPECT_NONFATAL_FAILURE(
      expect_ranks_succeed(2, suicide, {.timeout = std::chrono::seconds(30), .env = {}}),
      "rank 1 failed (signal SIGKILL)");
}

TEST(MultiprocHarness, RanksSeeTheirEnvironment) {
  expect_ranks_succeed(
      2, [](int, int, int) { EXPECT_STREQ(std::getenv("TANDEM_HARNESS_TEST"), "on"); },
      {.timeout = seconds(30), .env = {"TANDEM_HARNESS_TEST=on"}});
}

}  // namespace
}  // namespace tandem::testing
