// The strategies' memory accounting: strategy none samples as backward
// begins, so an armed ActivationTracker's count reaches its peak figure.
// The default train_step in passes of StepContext::micro_batch rows.
#include "tandem/train/strategy.h"

#include <ATen/Context.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "tandem/memory/activation_tracker.h"

namespace tandem::train {
namespace {

// One step of strategy none on a 16-32-4 network whose first bias is frozen;
// returns its memory accounting.
memory::MemoryAccounting one_step(int64_t batch) {
  torch::nn::Sequential net(torch::nn::Linear(16, 32), torch::nn::ReLU(), torch::nn::Linear(32, 4));
  net->ptr(0)->named_parameters()["bias"].set_requires_grad(false);
  TrainerOptions o;
  o.strategy.kind = StrategyKind::kNone;
  auto strategy = make_strategy(o, net.ptr(), nullptr, nullptr);
  strategy->zero_grad();
  net->forward(at::randn({batch, 16})).sum().backward();
  strategy->step();
  return strategy->memory();
}

TEST(Strategy, NoneCountsActivationsAsBackwardBegins) {
  constexpr int64_t kBatch = 64;
  const memory::MemoryAccounting untracked = one_step(kBatch);
  EXPECT_EQ(untracked.peak_activations(), 0);
  EXPECT_EQ(untracked.peak_with_activations(), untracked.peak_total());

  memory::ActivationTracker tracker;
  const memory::MemoryAccounting m = one_step(kBatch);
  // Alive when the first gradient is ready: at least the input (saved for the
  // first weight's gradient) and ReLU's output (saved for its own), float32.
  EXPECT_GE(m.peak_activations(), kBatch * (16 + 32) * 4);
  EXPECT_GE(m.peak_with_activations(), m.peak_total() + m.peak_activations() / 2);
  EXPECT_LT(m.activations_now(), m.peak_activations());  // after the step, freed
}

// One SGD step (momentum 0.9) of a float64 16-32-4 network on a batch of 10
// rows in passes of `micro_batch` rows; returns the loss and the parameters.
std::pair<double, std::vector<at::Tensor>> step_in_passes(int64_t micro_batch, double loss_scale) {
  at::manual_seed(7);
  torch::nn::Sequential net(torch::nn::Linear(16, 32), torch::nn::ReLU(), torch::nn::Linear(32, 4));
  net->to(at::kDouble);
  TrainerOptions o;
  o.strategy.kind = StrategyKind::kNone;
  o.optimizer.momentum = 0.9;
  auto strategy = make_strategy(o, net.ptr(), nullptr, nullptr);
  const Batch batch{at::randn({10, 16}, at::kDouble), at::randint(0, 4, {10}, at::kLong)};
  StepContext ctx;
  ctx.forward = [&](const at::Tensor& x) { return net->forward(x); };
  ctx.micro_batch = micro_batch;
  ctx.loss_scale = loss_scale;
  const double loss = strategy->train_step(batch, 0.1, ctx);
  std::vector<at::Tensor> params;
  for (const auto& p : net->parameters()) params.push_back(p.detach().clone());
  return {loss, params};
}

// Passes of 3, 3, 3 and 1 rows give the whole batch's loss and step: each
// pass's loss weighs its share of the rows, and the gradients accumulate.
TEST(Strategy, TrainStepInPassesEqualsTheWholeBatch) {
  for (const double scale : {1.0, 0.75}) {
    const auto [whole_loss, whole] = step_in_passes(0, scale);
    for (const int64_t micro : {1, 3, 10, 64}) {
      const auto [loss, params] = step_in_passes(micro, scale);
      EXPECT_NEAR(loss, whole_loss, 1e-12 * std::abs(whole_loss)) << "micro_batch " << micro;
      ASSERT_EQ(params.size(), whole.size());
      for (size_t i = 0; i < params.size(); ++i) {
        EXPECT_TRUE(at::allclose(params[i], whole[i], 1e-12, 1e-14))
            << "micro_batch " << micro << ", parameter " << i;
      }
    }
  }
}

}  // namespace
}  // namespace tandem::train
