#include "tandem/detect/box_ops.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tandem/core/error.h"

namespace tandem::detect {
namespace {

at::Tensor box(double x1, double y1, double x2, double y2) {
  return at::tensor({x1, y1, x2, y2}, at::kDouble);
}

TEST(BoxOps, IouOfOverlappingSquares) {
  // [0,0,2,2] and [1,1,3,3]: intersection 1, union 4 + 4 - 1 = 7.
  EXPECT_NEAR(bbox_iou(box(0, 0, 2, 2), box(1, 1, 3, 3)).item<double>(), 1.0 / 7, 1e-6);
  // Disjoint boxes: 0; identical boxes: 1.
  EXPECT_NEAR(bbox_iou(box(0, 0, 1, 1), box(2, 2, 3, 3)).item<double>(), 0.0, 1e-9);
  EXPECT_NEAR(bbox_iou(box(0, 0, 4, 2), box(0, 0, 4, 2)).item<double>(), 1.0, 1e-6);
}

TEST(BoxOps, CiouOfSameAspectBoxesSubtractsCentreDistance) {
  // IoU 1/7; enclosing box [0,0,3,3]: c^2 = 18; centres (1,1), (2,2): rho^2 = 2;
  // same aspect: v = 0. CIoU = 1/7 - 2/18 = 2/63.
  EXPECT_NEAR(bbox_iou(box(0, 0, 2, 2), box(1, 1, 3, 3), true).item<double>(), 2.0 / 63, 1e-6);
}

TEST(BoxOps, CiouPenalisesAspectRatio) {
  // [0,0,4,2] vs [0,0,2,2]: IoU 4/8 = 0.5; c^2 = 16 + 4 = 20; rho^2 = 1;
  // v = 4/pi^2 (atan(1) - atan(2))^2 = 0.0419565; alpha = v / (v + 0.5) = 0.0774167;
  // CIoU = 0.5 - 1/20 - v alpha = 0.4467519.
  EXPECT_NEAR(bbox_iou(box(0, 0, 4, 2), box(0, 0, 2, 2), true).item<double>(), 0.4467519, 1e-6);
}

TEST(BoxOps, CiouGradientFlowsThroughTheBoxesOnly) {
  auto a = box(0, 0, 4, 2).requires_grad_(true);
  auto c = bbox_iou(a, box(0, 0, 2, 2), true);
  c.backward();
  ASSERT_TRUE(a.grad().defined());
  EXPECT_TRUE(a.grad().isfinite().all().item<bool>());
  // Shrinking the right edge towards 2 raises the CIoU.
  EXPECT_LT(a.grad()[2].item<double>(), 0.0);
}

TEST(BoxOps, PairwiseIou) {
  auto a = at::stack({box(0, 0, 2, 2), box(10, 10, 12, 12)});
  auto b = at::stack({box(1, 1, 3, 3), box(0, 0, 2, 2), box(10, 10, 11, 11)});
  auto iou = box_iou(a, b);
  ASSERT_EQ(iou.sizes(), (at::IntArrayRef{2, 3}));
  EXPECT_NEAR(iou[0][0].item<double>(), 1.0 / 7, 1e-6);
  EXPECT_NEAR(iou[0][1].item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(iou[0][2].item<double>(), 0.0, 1e-9);
  EXPECT_NEAR(iou[1][2].item<double>(), 0.25, 1e-6);
}

TEST(BoxOps, XywhRoundTrip) {
  auto xywh = at::tensor({5.0, 4.0, 2.0, 6.0}, at::kDouble);
  auto xyxy = xywh_to_xyxy(xywh);
  EXPECT_TRUE(at::allclose(xyxy, box(4, 1, 6, 7)));
  EXPECT_TRUE(at::allclose(xyxy_to_xywh(xyxy), xywh));
  EXPECT_THROW(xywh_to_xyxy(at::zeros({3})), InvalidArgument);
}

TEST(BoxOps, AnchorsAreCellCentresLevelByLevel) {
  std::vector<at::Tensor> feats = {at::zeros({1, 1, 2, 3}), at::zeros({1, 1, 1, 2})};
  auto [points, strides] = make_anchors(feats, {8, 16});
  ASSERT_EQ(points.sizes(), (at::IntArrayRef{8, 2}));
  // Row-major: (0.5,0.5), (1.5,0.5), (2.5,0.5), (0.5,1.5), ...
  EXPECT_FLOAT_EQ(points[1][0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(points[1][1].item<float>(), 0.5f);
  EXPECT_FLOAT_EQ(points[3][0].item<float>(), 0.5f);
  EXPECT_FLOAT_EQ(points[3][1].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(points[7][0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(strides[5][0].item<float>(), 8.0f);
  EXPECT_FLOAT_EQ(strides[6][0].item<float>(), 16.0f);
}

TEST(BoxOps, DistancesAndBoxesInvertEachOther) {
  auto anchor = at::tensor({4.5, 3.5}, at::kDouble).view({1, 2});
  auto b = box(2.0, 1.0, 7.0, 5.0).view({1, 4});
  auto d = bbox2dist(anchor, b, 15);
  EXPECT_TRUE(at::allclose(d, at::tensor({2.5, 2.5, 2.5, 1.5}, at::kDouble).view({1, 4})));
  EXPECT_TRUE(at::allclose(dist2bbox(d, anchor, false), b));
  EXPECT_TRUE(at::allclose(dist2bbox(d, anchor, true),
                           at::tensor({4.5, 3.0, 5.0, 4.0}, at::kDouble).view({1, 4})));
  // Distances beyond the last bin clamp to reg_max - 0.01.
  auto far = bbox2dist(anchor, box(-100, 1, 7, 5).view({1, 4}), 15);
  EXPECT_NEAR(far[0][0].item<double>(), 14.99, 1e-9);
}

}  // namespace
}  // namespace tandem::detect
