#include "tandem/detect/detection_loss.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/log.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "tandem/core/error.h"
#include "tandem/detect/detect_head.h"

namespace tandem::detect {
namespace {

TEST(DistributionFocalLoss, UniformBinsCostLogOfTheBinCount) {
  // Cross-entropy to any bin of a uniform distribution is log(16), and the
  // two weights (0.7, 0.3 for a target of 2.3) sum to 1.
  auto loss = distribution_focal_loss(at::zeros({1, 16}), at::tensor({2.3f}));
  EXPECT_NEAR(loss.item<float>(), std::log(16.0), 1e-5);
}

TEST(DistributionFocalLoss, TheTargetDistributionCostsItsEntropy) {
  // Target 2.3 -> bins 2 and 3 with weights 0.7 and 0.3. The prediction that
  // puts exactly that mass there scores -(0.7 ln 0.7 + 0.3 ln 0.3) = 0.6108643.
  auto p = at::full({1, 16}, 1e-12, at::kDouble);
  p[0][2] = 0.7;
  p[0][3] = 0.3;
  auto loss = distribution_focal_loss(at::log(p), at::tensor({2.3}, at::kDouble));
  EXPECT_NEAR(loss.item<double>(), 0.6108643, 1e-6);
  // Its expectation is the target itself.
  auto logits = at::log(p).view({1, 1, 16, 1}).expand({1, 4, 16, 1}).reshape({1, 64, 1});
  EXPECT_NEAR(dfl_expectation(logits, 16)[0][0][0].item<double>(), 2.3, 1e-9);
}

TEST(DetectionLoss, PadsTargetsPerImageInPixels) {
  // Image 1 has two boxes, image 0 one; an input of 64 x 32 pixels.
  auto targets = at::tensor({1.f, 2.f, 0.5f, 0.5f, 0.5f, 0.5f,    //
                             0.f, 1.f, 0.25f, 0.25f, 0.5f, 0.5f,  //
                             1.f, 0.f, 0.5f, 0.5f, 1.f, 1.f})
                     .view({3, 6});
  auto padded = pad_targets(targets, 2, 64, 32);
  ASSERT_EQ(padded.sizes(), (at::IntArrayRef{2, 2, 5}));
  // Image 0: class 1, centre (16, 8), size (32, 16) -> [0, 0, 32, 16]; then a zero row.
  EXPECT_FLOAT_EQ(padded[0][0][0].item<float>(), 1.f);
  EXPECT_FLOAT_EQ(padded[0][0][3].item<float>(), 32.f);
  EXPECT_FLOAT_EQ(padded[0][0][4].item<float>(), 16.f);
  EXPECT_FLOAT_EQ(padded[0][1].abs().sum().item<float>(), 0.f);
  // Image 1: class 2 at [16, 8, 48, 24], then class 0 covering the image.
  EXPECT_FLOAT_EQ(padded[1][0][1].item<float>(), 16.f);
  EXPECT_FLOAT_EQ(padded[1][1][3].item<float>(), 64.f);
  EXPECT_THROW(pad_targets(targets, 1, 64, 32), InvalidArgument);
}

// Raw head outputs for a 64x64 input: levels of 8x8, 4x4 and 2x2 cells.
std::vector<at::Tensor> raw_outputs(int64_t classes, bool requires_grad) {
  std::vector<at::Tensor> raw;
  for (int64_t cells : {8, 4, 2}) {
    raw.push_back((at::randn({2, 64 + classes, cells, cells}) * 0.1).requires_grad_(requires_grad));
  }
  return raw;
}

TEST(DetectionLoss, BoxesGiveThreeFinitePositiveTermsAndGradients) {
  at::manual_seed(0);
  auto raw = raw_outputs(3, true);
  auto targets = at::tensor({0.f, 1.f, 0.5f, 0.5f, 0.4f, 0.3f,  //
                             1.f, 2.f, 0.3f, 0.6f, 0.2f, 0.5f})
                     .view({2, 6});
  DetectionLoss loss(3);
  auto r = loss(raw, targets);
  ASSERT_EQ(r.items.sizes(), (at::IntArrayRef{3}));
  for (int i = 0; i < 3; ++i) {
    EXPECT_GT(r.items[i].item<float>(), 0.f) << "term " << i;
    EXPECT_TRUE(std::isfinite(r.items[i].item<float>()));
  }
  // total = sum of the terms x batch size.
  EXPECT_NEAR(r.total.item<float>(), r.items.sum().item<float>() * 2, 1e-4);
  r.total.backward();
  for (const auto& t : raw) {
    ASSERT_TRUE(t.grad().defined());
    EXPECT_GT(t.grad().abs().sum().item<float>(), 0.f);
  }
}

TEST(DetectionLoss, NoBoxesLeaveOnlyTheClassTerm) {
  at::manual_seed(1);
  auto raw = raw_outputs(2, false);
  auto r = DetectionLoss(2)(raw, at::zeros({0, 6}));
  EXPECT_EQ(r.items[0].item<float>(), 0.f);
  EXPECT_GT(r.items[1].item<float>(), 0.f);
  EXPECT_EQ(r.items[2].item<float>(), 0.f);
}

TEST(DetectionLoss, RejectsLevelsOfTheWrongWidth) {
  auto raw = raw_outputs(2, false);
  EXPECT_THROW(DetectionLoss(3)(raw, at::zeros({0, 6})), InvalidArgument);
}

TEST(DetectionLoss, TwoCopiesOfAnImageGetTheSameGradients) {
  // A batch holding one image and its boxes twice: the loss treats the two
  // alike, so their gradients are equal (and not zero).
  at::manual_seed(2);
  auto boxes = at::tensor({0.f, 1.f, 0.5f, 0.5f, 0.4f, 0.3f,  //
                           0.f, 2.f, 0.3f, 0.6f, 0.2f, 0.5f})
                   .view({2, 6});
  auto second = boxes.clone();
  second.select(1, 0).fill_(1);
  std::vector<at::Tensor> two;
  for (const auto& t : raw_outputs(3, false)) {
    two.push_back(at::cat({t.narrow(0, 0, 1), t.narrow(0, 0, 1)}, 0).requires_grad_(true));
  }
  DetectionLoss(3)(two, at::cat({boxes, second}, 0)).total.backward();
  for (const auto& t : two) {
    auto g0 = t.grad().narrow(0, 0, 1), g1 = t.grad().narrow(0, 1, 1);
    EXPECT_GT(g0.abs().sum().item<float>(), 0.f);
    EXPECT_LT((g0 - g1).abs().max().item<float>(), 1e-6);
  }
}

TEST(DetectionLoss, AGlobalScoreSumNormalisesEveryTerm) {
  // Data-parallel ranks divide by the sum over every rank's batch instead of
  // their own (which is at least 1): each term scales by own / global.
  at::manual_seed(3);
  auto raw = raw_outputs(3, false);
  auto targets = at::tensor({0.f, 1.f, 0.5f, 0.5f, 0.4f, 0.3f}).view({1, 6});
  DetectionLoss loss(3);
  auto own = loss(raw, targets);
  double seen = 0;
  auto global = loss(raw, targets, [&](const at::Tensor& s) {
    seen = s.item<double>();
    return s * 0 + 8.0;
  });
  EXPECT_GT(seen, 0.0);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(global.items[i].item<float>() * 8, own.items[i].item<float>() * std::max(seen, 1.0),
                1e-4)
        << "term " << i;
  }
}

}  // namespace
}  // namespace tandem::detect
