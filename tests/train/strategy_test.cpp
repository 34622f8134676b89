// The strategies' memory accounting: strategy none samples as backward
// begins, so an armed ActivationTracker's count reaches its peak figure.
#include "tandem/train/strategy.h"

#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <memory>

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

}  // namespace
}  // namespace tandem::train
