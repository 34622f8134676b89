// LocalModel: a model trained without a strategy reports its memory as the
// strategies do, as backward begins (only under an armed tracker) and when
// asked.
#include "tandem/parallel/local_model.h"

#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include "tandem/core/error.h"
#include "tandem/memory/activation_tracker.h"

namespace tandem::parallel {
namespace {

// 16-32-4 in float32: 676 parameters, 2704 bytes.
torch::nn::Sequential make_net() {
  at::manual_seed(0);
  return torch::nn::Sequential(torch::nn::Linear(16, 32), torch::nn::ReLU(),
                               torch::nn::Linear(32, 4));
}

TEST(LocalModel, CountsParametersGradientsAndOptimizerState) {
  auto net = make_net();
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-3));
  LocalModel local(net.ptr(), &opt);
  net->forward(at::randn({8, 16})).sum().backward();
  EXPECT_EQ(local.memory().peak_total(), 0);  // no tracker: no sample as backward begins
  opt.step();
  local.sample_memory();
  const memory::ModelStateBytes& now = local.memory().now();
  EXPECT_EQ(now.parameters, 2704);
  EXPECT_EQ(now.gradients, 2704);
  EXPECT_EQ(now.optimizer_state, 2 * 2704);
  EXPECT_EQ(local.memory().peak_point(), memory::MemoryPoint::kRequested);
}

// One sample per backward, at its first gradient, when the activations
// saved for backward are still alive.
TEST(LocalModel, SamplesActivationsOnceAsEachBackwardBegins) {
  auto net = make_net();
  LocalModel local(net.ptr(), nullptr);
  memory::ActivationTracker tracker;
  for (int step = 0; step < 2; ++step) {
    net->zero_grad();
    net->forward(at::randn({64, 16})).sum().backward();
  }
  const memory::MemoryAccounting& m = local.memory();
  EXPECT_EQ(m.peak_point(), memory::MemoryPoint::kBackwardBegins);
  // At least the input saved for the first weight's gradient and ReLU's output.
  EXPECT_GE(m.peak_activations(), 64 * (16 + 32) * 4);
  EXPECT_EQ(m.now().optimizer_state, 0);
  EXPECT_THROW(LocalModel(nullptr, nullptr), InvalidArgument);
}

}  // namespace
}  // namespace tandem::parallel
