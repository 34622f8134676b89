#include "tandem/parallel/bucket_plan.h"

#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "tandem/core/error.h"

namespace tandem::parallel {
namespace {

TEST(BucketPlan, SplitsAtByteCapInReverseOrder) {
  // float32: 100, 50, 50, 200 elements = 400, 200, 200, 800 bytes; cap 450.
  auto plan = make_bucket_plan({100, 50, 50, 200}, std::vector<at::ScalarType>(4, at::kFloat), 450);
  ASSERT_EQ(plan.buckets.size(), 3u);
  EXPECT_EQ(plan.buckets[0].params, (std::vector<size_t>{3}));     // larger than the cap: alone
  EXPECT_EQ(plan.buckets[1].params, (std::vector<size_t>{2, 1}));  // 400 bytes fit
  EXPECT_EQ(plan.buckets[2].params, (std::vector<size_t>{0}));
  EXPECT_EQ(plan.buckets[1].offsets, (std::vector<int64_t>{0, 50}));
  EXPECT_EQ(plan.buckets[1].numel, 100);
  EXPECT_EQ(plan.bucket_of[1], 1u);
  EXPECT_EQ(plan.slot_of[1], 1u);
}

TEST(BucketPlan, NeverMixesDtypes) {
  auto plan = make_bucket_plan({4, 4, 4}, {at::kFloat, at::kDouble, at::kDouble}, 1 << 20);
  ASSERT_EQ(plan.buckets.size(), 2u);
  EXPECT_EQ(plan.buckets[0].dtype, at::kDouble);
  EXPECT_EQ(plan.buckets[0].params, (std::vector<size_t>{2, 1}));
  EXPECT_EQ(plan.buckets[1].dtype, at::kFloat);
}

TEST(BucketPlan, FromTensorsAsFromTheirSizesAndDtypes) {
  auto plan = make_bucket_plan({at::zeros({100}), at::zeros({50}, at::kDouble), at::zeros({50})},
                               450);
  auto same = make_bucket_plan({100, 50, 50}, {at::kFloat, at::kDouble, at::kFloat}, 450);
  ASSERT_EQ(plan.buckets.size(), same.buckets.size());
  for (size_t b = 0; b < plan.buckets.size(); ++b) {
    EXPECT_EQ(plan.buckets[b].params, same.buckets[b].params);
    EXPECT_EQ(plan.buckets[b].dtype, same.buckets[b].dtype);
  }
}

TEST(BucketPlan, EmptyAndBadInput) {
  EXPECT_TRUE(make_bucket_plan({}, {}, 100).buckets.empty());
  EXPECT_THROW(make_bucket_plan({1}, {}, 100), InvalidArgument);
  EXPECT_THROW(make_bucket_plan({1}, {at::kFloat}, 0), InvalidArgument);
}

}  // namespace
}  // namespace tandem::parallel
