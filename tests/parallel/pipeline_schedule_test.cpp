// Pipeline schedules as pure logic: every micro-batch is forwarded once and
// later backwarded once, 1F1B keeps at most p - s micro-batches in flight on
// stage s while GPipe keeps all m, the bubble formula, and balanced cuts.
#include "tandem/parallel/pipeline_schedule.h"

#include <gtest/gtest.h>

#include "tandem/core/error.h"

namespace tandem::parallel {
namespace {

void expect_complete(const std::vector<PipelineAction>& actions, int m) {
  ASSERT_EQ(actions.size(), 2u * static_cast<size_t>(m));
  std::vector<int> forwarded(static_cast<size_t>(m), 0), backwarded(static_cast<size_t>(m), 0);
  int next_f = 0, next_b = 0;
  for (const auto& a : actions) {
    if (a.forward) {
      EXPECT_EQ(a.micro_batch, next_f++);
    } else {
      EXPECT_EQ(a.micro_batch, next_b++);
      EXPECT_LT(a.micro_batch, next_f) << "backward before its forward";
    }
  }
  EXPECT_EQ(next_f, m);
  EXPECT_EQ(next_b, m);
}

TEST(PipelineSchedule, EveryMicroBatchOnceEachWay) {
  for (auto kind : {PipelineScheduleKind::kGPipe, PipelineScheduleKind::k1F1B}) {
    for (int p : {1, 2, 4}) {
      for (int m : {1, 3, 4, 8, 16}) {
        for (int s = 0; s < p; ++s) expect_complete(pipeline_schedule(kind, s, p, m), m);
      }
    }
  }
}

TEST(PipelineSchedule, OneFOneBBoundsWhatIsInFlight) {
  for (int p : {2, 4}) {
    for (int m : {4, 8, 16}) {
      for (int s = 0; s < p; ++s) {
        EXPECT_EQ(max_in_flight(pipeline_schedule(PipelineScheduleKind::kGPipe, s, p, m)), m);
        const int f = max_in_flight(pipeline_schedule(PipelineScheduleKind::k1F1B, s, p, m));
        EXPECT_EQ(f, std::min(p - s, m)) << "p " << p << " m " << m << " stage " << s;
      }
    }
  }
}

TEST(PipelineSchedule, OneFOneBOnTheLastStageAlternates) {
  const auto a = pipeline_schedule(PipelineScheduleKind::k1F1B, 3, 4, 3);
  const std::vector<PipelineAction> want = {{true, 0},  {false, 0}, {true, 1},
                                            {false, 1}, {true, 2},  {false, 2}};
  EXPECT_EQ(a, want);
}

TEST(PipelineSchedule, BubbleFraction) {
  EXPECT_DOUBLE_EQ(theoretical_bubble_fraction(4, 8), 3.0 / 11.0);
  EXPECT_DOUBLE_EQ(theoretical_bubble_fraction(1, 8), 0.0);
  EXPECT_THROW(theoretical_bubble_fraction(0, 8), InvalidArgument);
}

TEST(PipelineSchedule, BalancedCuts) {
  EXPECT_EQ(balanced_cut_points({10, 0, 10, 0, 10}, 3), (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(balanced_cut_points({1, 1, 1, 1}, 4), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(balanced_cut_points({100, 1, 1}, 3), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(balanced_cut_points({0, 0, 0}, 2).size(), 2u);
  EXPECT_EQ(balanced_cut_points({5, 5}, 1), (std::vector<int>{0}));
  EXPECT_THROW(balanced_cut_points({1, 2}, 3), InvalidArgument);
}

TEST(PipelineSchedule, BadInputIsNamed) {
  EXPECT_THROW(pipeline_schedule(PipelineScheduleKind::k1F1B, 2, 2, 4), InvalidArgument);
  EXPECT_THROW(pipeline_schedule(PipelineScheduleKind::k1F1B, 0, 2, 0), InvalidArgument);
}

}  // namespace
}  // namespace tandem::parallel
