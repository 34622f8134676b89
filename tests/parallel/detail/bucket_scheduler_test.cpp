// The gradient-ready state machine DDP and ZeRO share: buckets launch in
// bucket order whatever order their gradients arrive in, repeats are
// ignored, unused parameters are taken at the end, and the error for them
// names the parameters and the option to set.
#include "src/parallel/detail/bucket_scheduler.h"

#include <gtest/gtest.h>

#include <optional>

#include "tandem/core/error.h"

namespace tandem::parallel::detail {
namespace {

// float32, 100 / 50 / 50 / 200 elements, cap 450 bytes: buckets
// 0 = {3}, 1 = {2, 1}, 2 = {0} (reverse registration order).
BucketPlan plan() {
  return make_bucket_plan({100, 50, 50, 200}, std::vector<at::ScalarType>(4, at::kFloat), 450);
}

std::vector<size_t> drain(BucketScheduler& s) {
  std::vector<size_t> launched;
  while (std::optional<size_t> b = s.next_launch()) launched.push_back(*b);
  return launched;
}

using Buckets = std::vector<size_t>;

TEST(BucketScheduler, ReadyInBackwardOrderLaunchesEachBucketAsItFills) {
  BucketScheduler s(plan());
  ASSERT_EQ(s.bucket_count(), 3u);
  EXPECT_FALSE(s.backward_begun());
  EXPECT_TRUE(s.begin_backward());
  EXPECT_FALSE(s.begin_backward());  // once per backward
  EXPECT_TRUE(s.in_backward());
  EXPECT_TRUE(s.mark_ready(3));
  EXPECT_EQ(drain(s), (Buckets{0}));
  EXPECT_TRUE(s.mark_ready(2));
  EXPECT_EQ(drain(s), Buckets{});  // bucket 1 still waits for parameter 1
  EXPECT_TRUE(s.mark_ready(1));
  EXPECT_EQ(drain(s), (Buckets{1}));
  EXPECT_TRUE(s.mark_ready(0));
  EXPECT_EQ(drain(s), (Buckets{2}));
  EXPECT_TRUE(s.all_launched());
  EXPECT_TRUE(s.launched(2));
  s.end_of_hooks();
  EXPECT_FALSE(s.in_backward());
  EXPECT_TRUE(s.backward_begun());
}

TEST(BucketScheduler, ABucketThatFillsEarlyWaitsForTheOnesBeforeIt) {
  BucketScheduler s(plan());
  s.begin_backward();
  s.mark_ready(0);  // bucket 2 is full
  s.mark_ready(1);
  s.mark_ready(2);  // bucket 1 is full
  EXPECT_EQ(drain(s), Buckets{});
  EXPECT_FALSE(s.launched(1));
  EXPECT_EQ(s.launched_count(), 0u);
  s.mark_ready(3);  // bucket 0: now all three go, in order
  EXPECT_EQ(drain(s), (Buckets{0, 1, 2}));
}

TEST(BucketScheduler, ASecondGradientForAParameterChangesNothing) {
  BucketScheduler s(plan());
  s.begin_backward();
  EXPECT_TRUE(s.mark_ready(2));
  EXPECT_FALSE(s.mark_ready(2));
  EXPECT_TRUE(s.is_ready(2));
  EXPECT_FALSE(s.is_ready(1));
  s.mark_ready(3);
  EXPECT_EQ(drain(s), (Buckets{0}));  // bucket 1 still counts parameter 1 as missing
}

TEST(BucketScheduler, UnusedParametersAreTakenAtTheEndAndTheRestLaunch) {
  BucketScheduler s(plan());
  s.begin_backward();
  s.mark_ready(3);
  s.mark_ready(2);
  EXPECT_EQ(drain(s), (Buckets{0}));
  s.end_of_hooks();
  EXPECT_EQ(s.take_unready(), (std::vector<size_t>{0, 1}));
  EXPECT_TRUE(s.take_unready().empty());
  EXPECT_EQ(drain(s), (Buckets{1, 2}));
}

TEST(BucketScheduler, ResetStartsANewIterationAndCountsBackwards) {
  BucketScheduler s(plan());
  s.begin_backward();
  for (size_t p = 0; p < 4; ++p) s.mark_ready(p);
  drain(s);
  EXPECT_EQ(s.backwards_begun(), 1u);
  s.reset();
  EXPECT_FALSE(s.backward_begun());
  EXPECT_FALSE(s.in_backward());
  EXPECT_EQ(s.launched_count(), 0u);
  EXPECT_FALSE(s.is_ready(3));
  EXPECT_TRUE(s.begin_backward());
  EXPECT_EQ(s.backwards_begun(), 2u);
  s.mark_ready(3);
  EXPECT_EQ(drain(s), (Buckets{0}));
}

TEST(BucketScheduler, NoParametersMeansNothingToLaunch) {
  BucketScheduler s(make_bucket_plan({}, {}, 100));
  EXPECT_TRUE(s.all_launched());
  EXPECT_EQ(s.next_launch(), std::nullopt);
  EXPECT_TRUE(s.take_unready().empty());
}

TEST(BucketScheduler, UnusedParametersAreAnErrorNamingThemAndTheOption) {
  EXPECT_NO_THROW(check_no_unused_parameters(0, "X", "XOptions", {}, false));
  EXPECT_NO_THROW(check_no_unused_parameters(0, "X", "XOptions", {"a.weight"}, true));
  try {
    check_no_unused_parameters(1, "DistributedDataParallel", "DdpOptions",
                               {"unused.weight", "unused.bias"}, false);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank 1: DistributedDataParallel: parameters unused.weight, unused.bias "
                       "got no gradient in this backward"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("set DdpOptions::find_unused_parameters"), std::string::npos) << msg;
    EXPECT_NE(msg.find("requires_grad(false)"), std::string::npos) << msg;
  }
  try {
    check_no_unused_parameters(0, "ZeroRedundancyOptimizer", "ZeroOptions", {"head.bias"}, false);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("parameter head.bias got no gradient"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tandem::parallel::detail
