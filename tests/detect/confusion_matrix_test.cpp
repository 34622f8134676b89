#include "tandem/detect/confusion_matrix.h"

#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "tandem/core/error.h"

namespace tandem::detect {
namespace {

TEST(ConfusionMatrix, CountsHitsConfusionsMissesAndFalseAlarms) {
  ConfusionMatrix cm(2);
  // Ground truth: a class-0 box, a class-1 box and a class-1 box far away.
  const at::Tensor gt =
      at::tensor({0.f, 0.f, 10.f, 10.f, 20.f, 20.f, 30.f, 30.f, 50.f, 50.f, 60.f, 60.f})
          .view({3, 4});
  const at::Tensor cls = at::tensor({0, 1, 1}, at::kLong);
  // Detections: class 0 on the first (hit), class 0 on the second
  // (confusion), class 1 on empty ground (false alarm), one below conf.
  const at::Tensor det = at::tensor({0.f,  0.f,  10.f, 10.f, 0.9f, 0.f,  //
                                     20.f, 20.f, 30.f, 30.f, 0.8f, 0.f,  //
                                     80.f, 80.f, 90.f, 90.f, 0.7f, 1.f,  //
                                     50.f, 50.f, 60.f, 60.f, 0.1f, 1.f})
                             .view({4, 6});
  cm.update(det, gt, cls);
  const at::Tensor expected = at::tensor({1, 1, 0,   // predicted 0: true 0, true 1
                                          0, 0, 1,   // predicted 1: background
                                          0, 1, 0},  // missed: the far class-1 box
                                         at::kLong)
                                  .view({3, 3});
  EXPECT_TRUE(cm.matrix().equal(expected)) << cm.matrix();
  EXPECT_THROW(ConfusionMatrix(0), InvalidArgument);
  EXPECT_THROW(cm.update(at::zeros({1, 5}), gt, cls), InvalidArgument);
}

}  // namespace
}  // namespace tandem::detect
