#include "tandem/detect/task_aligned_assigner.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tandem/core/error.h"
#include "tandem/detect/box_ops.h"

namespace tandem::detect {
namespace {

// A 4x4 grid of anchors at stride 8: centres (4, 4), (12, 4), ..., (28, 28).
at::Tensor grid_anchors() {
  auto [points, strides] = make_anchors({at::zeros({1, 1, 4, 4})}, {8});
  return points * strides;
}

// Every anchor predicts the same box.
at::Tensor same_boxes(double x1, double y1, double x2, double y2) {
  return at::tensor({x1, y1, x2, y2}, at::kFloat).view({1, 1, 4}).expand({1, 16, 4}).contiguous();
}

TEST(TaskAlignedAssigner, PicksTopKAnchorsInsideTheBoxByAlignment) {
  // One box [0, 0, 16, 16] of class 0 contains anchors 0 (4,4), 1 (12,4),
  // 4 (4,12) and 5 (12,12). Every prediction is the box itself (CIoU 1), so
  // the alignment is score^0.5: anchors 0 (0.9) and 1 (0.5) are the top 2.
  auto scores = at::full({1, 16, 2}, 0.05f);
  scores[0][0][0] = 0.9f;
  scores[0][1][0] = 0.5f;
  scores[0][4][0] = 0.2f;
  scores[0][5][0] = 0.1f;
  auto gt_boxes = at::tensor({0.f, 0.f, 16.f, 16.f}).view({1, 1, 4});
  auto gt_labels = at::zeros({1, 1, 1});
  auto mask = at::ones({1, 1, 1});
  TaskAlignedAssigner assigner(2, AssignerOptions{.topk = 2});
  Assignment a =
      assigner.assign(scores, same_boxes(0, 0, 16, 16), grid_anchors(), gt_labels, gt_boxes, mask);
  auto fg = a.fg_mask[0];
  EXPECT_TRUE(fg[0].item<bool>());
  EXPECT_TRUE(fg[1].item<bool>());
  EXPECT_EQ(fg.sum().item<int64_t>(), 2);
  // Scores are normalised so that the best anchor gets the box's best IoU (1):
  // anchor 0: 1; anchor 1: sqrt(0.5) / sqrt(0.9) = sqrt(5/9).
  EXPECT_NEAR(a.target_scores[0][0][0].item<float>(), 1.0, 1e-5);
  EXPECT_NEAR(a.target_scores[0][1][0].item<float>(), std::sqrt(5.0 / 9.0), 1e-5);
  EXPECT_NEAR(a.target_scores.sum().item<float>(), 1.0 + std::sqrt(5.0 / 9.0), 1e-5);
  EXPECT_EQ(a.target_labels[0][1].item<int64_t>(), 0);
  EXPECT_FLOAT_EQ(a.target_bboxes[0][1][2].item<float>(), 16.f);
}

TEST(TaskAlignedAssigner, AnchorClaimedTwiceGoesToTheHigherIou) {
  // Box A [0,0,16,16] (class 0) and box B [0,0,10,10] (class 1) both contain
  // anchor 0 at (4,4), and with top-1 both pick it. Every prediction is
  // [0,0,10,10]: IoU 1 with B, 100/256 with A, so anchor 0 goes to B.
  auto scores = at::full({1, 16, 2}, 0.1f);
  scores[0][0][0] = 0.9f;
  scores[0][0][1] = 0.9f;
  auto gt_boxes = at::tensor({0.f, 0.f, 16.f, 16.f, 0.f, 0.f, 10.f, 10.f}).view({1, 2, 4});
  auto gt_labels = at::tensor({0.f, 1.f}).view({1, 2, 1});
  auto mask = at::ones({1, 2, 1});
  TaskAlignedAssigner assigner(2, AssignerOptions{.topk = 1});
  Assignment a =
      assigner.assign(scores, same_boxes(0, 0, 10, 10), grid_anchors(), gt_labels, gt_boxes, mask);
  EXPECT_EQ(a.fg_mask.sum().item<int64_t>(), 1);
  EXPECT_TRUE(a.fg_mask[0][0].item<bool>());
  EXPECT_EQ(a.target_gt_idx[0][0].item<int64_t>(), 1);
  EXPECT_EQ(a.target_labels[0][0].item<int64_t>(), 1);
  EXPECT_NEAR(a.target_scores[0][0][1].item<float>(), 1.0, 1e-5);
  EXPECT_NEAR(a.target_scores[0][0][0].item<float>(), 0.0, 1e-9);
}

TEST(TaskAlignedAssigner, PaddingBoxesAndNoBoxesAssignNothing) {
  auto scores = at::full({1, 16, 2}, 0.5f);
  TaskAlignedAssigner assigner(2);
  // A padding row (mask 0) of zeros.
  Assignment a = assigner.assign(scores, same_boxes(0, 0, 8, 8), grid_anchors(),
                                 at::zeros({1, 1, 1}), at::zeros({1, 1, 4}), at::zeros({1, 1, 1}));
  EXPECT_EQ(a.fg_mask.sum().item<int64_t>(), 0);
  EXPECT_EQ(a.target_scores.sum().item<float>(), 0.f);
  // No boxes at all.
  Assignment none =
      assigner.assign(scores, same_boxes(0, 0, 8, 8), grid_anchors(), at::zeros({1, 0, 1}),
                      at::zeros({1, 0, 4}), at::zeros({1, 0, 1}));
  EXPECT_EQ(none.fg_mask.sum().item<int64_t>(), 0);
  EXPECT_EQ(none.target_scores.sizes(), scores.sizes());
}

TEST(TaskAlignedAssigner, AnchorsInsideBoxesOnly) {
  auto inside =
      select_candidates_in_gts(grid_anchors(), at::tensor({0.f, 0.f, 16.f, 16.f}).view({1, 1, 4}));
  EXPECT_EQ(inside.sum().item<float>(), 4.f);
  EXPECT_EQ(inside[0][0][5].item<float>(), 1.f);
  EXPECT_EQ(inside[0][0][2].item<float>(), 0.f);
}

TEST(TaskAlignedAssigner, RejectsMismatchedShapes) {
  TaskAlignedAssigner assigner(3);
  EXPECT_THROW(assigner.assign(at::zeros({1, 16, 2}), at::zeros({1, 16, 4}), grid_anchors(),
                               at::zeros({1, 1, 1}), at::zeros({1, 1, 4}), at::ones({1, 1, 1})),
               InvalidArgument);
  EXPECT_THROW(TaskAlignedAssigner(0), InvalidArgument);
}

TEST(TaskAlignedAssigner, ImagesOfABatchAreAssignedAlike) {
  // The first case twice in one batch, the second image's box listed after a
  // padding row: both images get anchors 0 and 1.
  auto scores = at::full({2, 16, 2}, 0.05f);
  for (int b = 0; b < 2; ++b) {
    scores[b][0][0] = 0.9f;
    scores[b][1][0] = 0.5f;
  }
  auto gt_boxes = at::tensor({0.f, 0.f, 16.f, 16.f, 0.f, 0.f, 0.f, 0.f,  //
                              0.f, 0.f, 16.f, 16.f, 0.f, 0.f, 0.f, 0.f})
                      .view({2, 2, 4});
  auto mask = at::tensor({1.f, 0.f, 1.f, 0.f}).view({2, 2, 1});
  auto boxes = at::tensor({0.f, 0.f, 16.f, 16.f}).view({1, 1, 4}).expand({2, 16, 4}).contiguous();
  TaskAlignedAssigner assigner(2, AssignerOptions{.topk = 2});
  Assignment a =
      assigner.assign(scores, boxes, grid_anchors(), at::zeros({2, 2, 1}), gt_boxes, mask);
  EXPECT_EQ(a.fg_mask[0].sum().item<int64_t>(), 2);
  EXPECT_EQ(a.fg_mask[1].sum().item<int64_t>(), 2);
  EXPECT_TRUE(a.target_scores[0].equal(a.target_scores[1]));
}

}  // namespace
}  // namespace tandem::detect
