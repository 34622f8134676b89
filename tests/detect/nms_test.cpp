#include "tandem/detect/nms.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <vector>

#include "tandem/core/error.h"

namespace tandem::detect {
namespace {

// A [0,0,10,10] 0.9; B [1,1,11,11] 0.8 (IoU with A 81/119 = 0.68);
// C [20,20,30,30] 0.7 (disjoint); D [0,0,10,9] 0.6 (IoU with A 0.9).
at::Tensor boxes() {
  return at::tensor({0.f, 0.f, 10.f, 10.f, 1.f, 1.f, 11.f, 11.f, 20.f, 20.f, 30.f, 30.f,  //
                     0.f, 0.f, 10.f, 9.f})
      .view({4, 4});
}
at::Tensor scores() { return at::tensor({0.9f, 0.8f, 0.7f, 0.6f}); }

std::vector<int64_t> to_vector(const at::Tensor& t) {
  auto c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

TEST(Nms, RemovesBoxesOverlappingAKeptOne) {
  EXPECT_EQ(to_vector(nms(boxes(), scores(), 0.5)), (std::vector<int64_t>{0, 2}));
  // At 0.7, B (0.68) survives; D (0.9) still goes.
  EXPECT_EQ(to_vector(nms(boxes(), scores(), 0.7)), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(to_vector(nms(boxes(), scores(), 0.95)), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(Nms, OrdersByScoreNotByInput) {
  auto s = at::tensor({0.1f, 0.8f, 0.7f, 0.9f});
  // D (0.9) first suppresses A (IoU 0.9); B (0.8) has IoU 72/118 with D and goes too.
  EXPECT_EQ(to_vector(nms(boxes(), s, 0.5)), (std::vector<int64_t>{3, 2}));
}

TEST(Nms, EmptyInput) {
  EXPECT_EQ(nms(at::zeros({0, 4}), at::zeros({0}), 0.5).numel(), 0);
  EXPECT_THROW(nms(at::zeros({2, 4}), at::zeros({3}), 0.5), InvalidArgument);
}

// The decoded layout [1, 4 + C, A] from boxes (xyxy) and class probabilities.
at::Tensor prediction(const at::Tensor& xyxy, const at::Tensor& probs) {
  auto xy = (xyxy.narrow(1, 0, 2) + xyxy.narrow(1, 2, 2)) / 2;
  auto wh = xyxy.narrow(1, 2, 2) - xyxy.narrow(1, 0, 2);
  return at::cat({xy, wh, probs}, 1).transpose(0, 1).unsqueeze(0);
}

TEST(NonMaxSuppression, KeepsClassesApartAndDropsLowConfidence) {
  // Two classes: B is class 1, so A does not suppress it; D (class 0) goes.
  auto probs = at::zeros({4, 2});
  probs[0][0] = 0.9f;
  probs[1][1] = 0.8f;
  probs[2][0] = 0.1f;  // below conf 0.25
  probs[3][0] = 0.6f;
  NmsOptions o;
  o.iou_threshold = 0.5;
  auto out = non_max_suppression(prediction(boxes(), probs), o);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].sizes(), (at::IntArrayRef{2, 6}));
  EXPECT_FLOAT_EQ(out[0][0][4].item<float>(), 0.9f);
  EXPECT_FLOAT_EQ(out[0][0][5].item<float>(), 0.f);
  EXPECT_FLOAT_EQ(out[0][1][4].item<float>(), 0.8f);
  EXPECT_FLOAT_EQ(out[0][1][5].item<float>(), 1.f);
  EXPECT_FLOAT_EQ(out[0][1][2].item<float>(), 11.f);
  // Class-agnostic: A suppresses B as well.
  o.agnostic = true;
  EXPECT_EQ(non_max_suppression(prediction(boxes(), probs), o)[0].size(0), 1);
  // max_det caps what is kept.
  o.agnostic = false;
  o.max_det = 1;
  EXPECT_EQ(non_max_suppression(prediction(boxes(), probs), o)[0].size(0), 1);
}

}  // namespace
}  // namespace tandem::detect
