#include "tandem/detect/detection_metrics.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "tandem/core/error.h"

namespace tandem::detect {
namespace {

TEST(AveragePrecision, CocoInterpolationOfAKnownCurve) {
  // Two objects; detections by confidence: TP, FP, TP. Recall 0.5, 0.5, 1;
  // precision 1, 0.5, 2/3. The envelope is 1 up to recall 0.5 (51 of the
  // 101 points: 0.00 .. 0.50) and 2/3 above (50 points):
  // AP = (51 + 50 * 2/3) / 101 = 0.8349835.
  EXPECT_NEAR(average_precision({0.5, 0.5, 1.0}, {1.0, 0.5, 2.0 / 3}), 0.8349835, 1e-6);
  // Perfect: 1. Recall never above 0.5 at precision 1: 51/101.
  EXPECT_NEAR(average_precision({0.5, 1.0}, {1.0, 1.0}), 1.0, 1e-12);
  EXPECT_NEAR(average_precision({0.5}, {1.0}), 51.0 / 101, 1e-12);
  EXPECT_EQ(average_precision({}, {}), 0.0);
}

TEST(MatchPredictions, GreedyByIouWithinTheClass) {
  // Ground truth: class 0, class 1. Predictions: class 0 (IoU 0.92 with gt 0),
  // class 0 (IoU 0.6 with gt 0), class 1 (IoU 0.7 with gt 0 but the wrong class,
  // 0.55 with gt 1).
  auto iou = at::tensor({0.92, 0.6, 0.7,  //
                         0.0, 0.0, 0.55})
                 .view({2, 3});
  auto correct =
      match_predictions(at::tensor({0, 0, 1}, at::kLong), at::tensor({0, 1}, at::kLong), iou);
  ASSERT_EQ(correct.sizes(), (at::IntArrayRef{3, 10}));
  // Prediction 0 is a TP up to 0.90 (thresholds 0.50 .. 0.90: 9 of 10).
  EXPECT_EQ(correct[0].sum().item<int64_t>(), 9);
  // Prediction 1 duplicates gt 0, already taken: never a TP.
  EXPECT_EQ(correct[1].sum().item<int64_t>(), 0);
  // Prediction 2 matches gt 1 at 0.50 and 0.55 only.
  EXPECT_EQ(correct[2].sum().item<int64_t>(), 2);
}

at::Tensor det(std::vector<float> rows) { return at::tensor(rows).view({-1, 6}); }

TEST(DetectionMetrics, MapOfACraftedSet) {
  DetectionMetrics m(3);
  // Image 1, class 0: two objects; detections TP 0.9, FP 0.8, TP 0.7 (the
  // TPs exact, so the same at every IoU threshold): AP 0.8349835.
  m.update(det({0, 0, 10, 10, 0.9f, 0,    //
                50, 50, 60, 60, 0.8f, 0,  //
                20, 20, 30, 30, 0.7f, 0}),
           at::tensor({0.f, 0.f, 10.f, 10.f, 20.f, 20.f, 30.f, 30.f}).view({2, 4}),
           at::tensor({0, 0}, at::kLong));
  // Image 2, class 1: one object found exactly: AP 1. Class 2 has no ground
  // truth and no detections: left out of the means.
  m.update(det({5, 5, 15, 15, 0.6f, 1}), at::tensor({5.f, 5.f, 15.f, 15.f}).view({1, 4}),
           at::tensor({1}, at::kLong));
  MetricsSummary s = m.compute();
  ASSERT_EQ(s.classes.size(), 2u);
  EXPECT_EQ(s.images, 2);
  EXPECT_EQ(s.instances, 3);
  EXPECT_NEAR(s.classes[0].ap50, 0.8349835, 1e-6);
  EXPECT_NEAR(s.classes[0].ap50_95, 0.8349835, 1e-6);
  EXPECT_NEAR(s.classes[1].ap50, 1.0, 1e-9);
  EXPECT_NEAR(s.map50, (0.8349835 + 1.0) / 2, 1e-6);
  EXPECT_NEAR(s.map50_95, (0.8349835 + 1.0) / 2, 1e-6);
  EXPECT_EQ(s.classes[0].instances, 2);
}

TEST(DetectionMetrics, LooseBoxesLoseTheStrictThresholds) {
  DetectionMetrics m(1);
  // One object [0,0,10,10], one detection [0,0,10,8.2]: IoU 0.82, a TP at
  // 0.50 .. 0.80 (7 of 10 thresholds): AP50 1, AP50-95 0.7.
  m.update(det({0, 0, 10, 8.2f, 0.9f, 0}), at::tensor({0.f, 0.f, 10.f, 10.f}).view({1, 4}),
           at::tensor({0}, at::kLong));
  MetricsSummary s = m.compute();
  EXPECT_NEAR(s.map50, 1.0, 1e-9);
  EXPECT_NEAR(s.map50_95, 0.7, 1e-9);
  EXPECT_NEAR(s.precision, 1.0, 1e-9);
  EXPECT_NEAR(s.recall, 1.0, 1e-9);
}

TEST(DetectionMetrics, MissedObjectsAndMergedRanks) {
  // Rank 0 saw one object and found it; rank 1 saw one and found nothing.
  DetectionMetrics a(1), b(1);
  a.update(det({0, 0, 10, 10, 0.9f, 0}), at::tensor({0.f, 0.f, 10.f, 10.f}).view({1, 4}),
           at::tensor({0}, at::kLong));
  b.update(at::zeros({0, 6}), at::tensor({0.f, 0.f, 5.f, 5.f}).view({1, 4}),
           at::tensor({0}, at::kLong));
  a.merge(b);
  MetricsSummary s = a.compute();
  EXPECT_EQ(s.images, 2);
  EXPECT_EQ(s.instances, 2);
  // Recall reaches 0.5 at precision 1: AP = 51/101.
  EXPECT_NEAR(s.map50, 51.0 / 101, 1e-9);
  EXPECT_NEAR(s.recall, 0.5, 1e-9);
  EXPECT_THROW(a.merge(DetectionMetrics(2)), InvalidArgument);
  // The raw statistics, gathered elsewhere, give the same figures.
  MetricsSummary again = DetectionMetrics::from_statistics(1, a.tp(), a.conf(), a.pred_cls(),
                                                           a.target_cls(), a.images())
                             .compute();
  EXPECT_EQ(again.images, 2);
  EXPECT_EQ(again.map50, s.map50);
  EXPECT_THROW(
      DetectionMetrics::from_statistics(1, a.tp(), at::zeros({5}), a.pred_cls(), a.target_cls(), 1),
      InvalidArgument);
  EXPECT_THROW(a.update(at::zeros({1, 5}), at::zeros({0, 4}), at::zeros({0})), InvalidArgument);
}

}  // namespace
}  // namespace tandem::detect
