#include "tandem/detect/model_ema.h"

#include <gtest/gtest.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

namespace tandem::detect {
namespace {

TEST(ModelEma, FollowsUltralyticsRamp) {
  auto model = std::make_shared<torch::nn::LinearImpl>(2, 1);
  auto avg = std::make_shared<torch::nn::LinearImpl>(2, 1);
  ModelEma ema(avg, 0.9999, 2000);
  {
    at::NoGradGuard g;
    model->weight.fill_(1.0);
    model->bias.fill_(2.0);
  }
  ema.copy_from(*model);
  EXPECT_EQ(avg->weight[0][0].item<float>(), 1.0f);
  {
    at::NoGradGuard g;
    model->weight.fill_(3.0);
  }
  const double d = 0.9999 * (1 - std::exp(-1.0 / 2000));
  EXPECT_DOUBLE_EQ(ema.next_decay(), d);
  ema.update(*model);
  EXPECT_EQ(ema.updates(), 1);
  EXPECT_NEAR(avg->weight[0][1].item<float>(), d * 1 + (1 - d) * 3, 1e-6);
  EXPECT_NEAR(avg->bias[0].item<float>(), 2.0, 1e-6);
}

TEST(ModelEma, AveragesRunningStatisticsButNotCounters) {
  auto model = std::make_shared<torch::nn::BatchNorm1dImpl>(2);
  auto avg = std::make_shared<torch::nn::BatchNorm1dImpl>(2);
  ModelEma ema(avg, 0.5, 1e-9);  // d = 0.5 from the first update
  at::NoGradGuard g;
  model->running_mean.fill_(4.0);
  model->num_batches_tracked.fill_(7);
  ema.update(*model);
  EXPECT_NEAR(avg->running_mean[0].item<float>(), 2.0, 1e-6);
  EXPECT_EQ(avg->num_batches_tracked.item<int64_t>(), 0);
}

}  // namespace
}  // namespace tandem::detect
