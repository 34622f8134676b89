#include "tandem/detect/yolo_schedule.h"

#include <gtest/gtest.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <numbers>

#include "tandem/detect/yolo_model.h"

namespace tandem::detect {
namespace {

double lr(const torch::optim::SGD& opt, size_t g) {
  return static_cast<const torch::optim::SGDOptions&>(opt.param_groups()[g].options()).lr();
}
double momentum(const torch::optim::SGD& opt, size_t g) {
  return static_cast<const torch::optim::SGDOptions&>(opt.param_groups()[g].options()).momentum();
}

TEST(YoloSchedule, AccumulatesToTheNominalBatchAndScalesDecay) {
  TrainArgs a;
  a.batch = 16;  // accumulate round(64 / 16) = 4; decay 5e-4 * 16 * 4 / 64
  a.epochs = 10;
  YoloSchedule s(a, 50);  // warmup max(round(3 * 50), 100) = 150
  EXPECT_EQ(s.warmup_iterations(), 150);
  EXPECT_DOUBLE_EQ(s.weight_decay(), 5e-4);
  EXPECT_EQ(s.accumulate(0), 1);
  EXPECT_EQ(s.accumulate(75), 2);  // round(1 + 3 * 0.5): 2.5 to the even 2, as NumPy
  EXPECT_EQ(s.accumulate(150), 4);
  EXPECT_EQ(s.accumulate(1000), 4);
  a.batch = 48;  // accumulate round(64 / 48) = 1; decay 5e-4 * 48 / 64
  YoloSchedule t(a, 10);
  EXPECT_EQ(t.warmup_iterations(), 100) << "at least 100 iterations";
  EXPECT_DOUBLE_EQ(t.weight_decay(), 5e-4 * 48.0 / 64.0);
}

TEST(YoloSchedule, LinearAndCosineFactors) {
  TrainArgs a;
  a.epochs = 10;
  a.lrf = 0.01;
  YoloSchedule lin(a, 10);
  EXPECT_DOUBLE_EQ(lin.lr_factor(0), 1.0);
  EXPECT_DOUBLE_EQ(lin.lr_factor(5), 0.5 * 0.99 + 0.01);
  EXPECT_DOUBLE_EQ(lin.lr_factor(10), 0.01);
  a.cos_lr = true;
  YoloSchedule cos(a, 10);
  EXPECT_DOUBLE_EQ(cos.lr_factor(0), 1.0);
  EXPECT_NEAR(cos.lr_factor(5), 0.5 * (0.01 - 1) + 1, 1e-15);
  EXPECT_NEAR(cos.lr_factor(10), 0.01, 1e-15);
}

TEST(YoloSchedule, ThreeGroupsAndWarmup) {
  YoloModel model(YoloOptions{.scale = YoloScale::kN, .num_classes = 3, .reg_max = 16, .norm = {}});
  TrainArgs a;
  a.batch = 64;
  a.epochs = 10;
  YoloSchedule s(a, 10);  // warmup 100 iterations
  auto opt = s.make_optimizer(*model);
  ASSERT_EQ(opt->param_groups().size(), 3u);
  size_t total = 0;
  for (const auto& g : opt->param_groups()) total += g.params().size();
  EXPECT_EQ(total, model->parameters().size());
  auto opts = [&](size_t g) {
    return static_cast<const torch::optim::SGDOptions&>(opt->param_groups()[g].options());
  };
  EXPECT_EQ(opts(0).weight_decay(), 0.0);
  EXPECT_DOUBLE_EQ(opts(1).weight_decay(), 5e-4);
  EXPECT_EQ(opts(2).weight_decay(), 0.0);
  EXPECT_TRUE(opts(1).nesterov());
  s.apply(*opt, 0, 0);
  EXPECT_DOUBLE_EQ(lr(*opt, 0), 0.1) << "bias lr starts at warmup_bias_lr";
  EXPECT_DOUBLE_EQ(lr(*opt, 1), 0.0);
  EXPECT_DOUBLE_EQ(momentum(*opt, 1), 0.8);
  s.apply(*opt, 50, 5);  // halfway, epoch factor 0.505
  EXPECT_NEAR(lr(*opt, 0), 0.05 + 0.5 * 0.01 * 0.505, 1e-15);
  EXPECT_NEAR(lr(*opt, 2), 0.5 * 0.01 * 0.505, 1e-15);
  EXPECT_NEAR(momentum(*opt, 2), 0.8 + 0.5 * 0.137, 1e-15);
  s.apply(*opt, 101, 5);
  EXPECT_NEAR(lr(*opt, 0), 0.01 * 0.505, 1e-15);
  EXPECT_DOUBLE_EQ(momentum(*opt, 0), 0.937);
}

}  // namespace
}  // namespace tandem::detect
