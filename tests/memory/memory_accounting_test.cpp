#include "tandem/parallel/memory_accounting.h"

#include <ATen/ops/ones_like.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

namespace tandem::parallel {
namespace {

TEST(MemoryAccounting, ViewsCountOnce) {
  at::Tensor flat = at::zeros({100});
  at::Tensor other = at::zeros({10}, at::kDouble);
  EXPECT_EQ(storage_bytes({flat.narrow(0, 0, 50), flat.narrow(0, 50, 50), other, at::Tensor()}),
            400 + 80);
}

TEST(MemoryAccounting, FreedStorageCountsNothing) {
  at::Tensor t = at::zeros({100});
  t.storage().unsafeGetStorageImpl()->reset();
  EXPECT_EQ(storage_bytes({t}), 0);
}

TEST(MemoryAccounting, PeaksPerFieldAndTotal) {
  MemoryAccounting m;
  m.record({100, 0, 0});
  m.record({100, 100, 0});
  m.record({50, 0, 200});
  EXPECT_EQ(m.now().total(), 250);
  EXPECT_EQ(m.peak().parameters, 100);
  EXPECT_EQ(m.peak().gradients, 100);
  EXPECT_EQ(m.peak().optimizer_state, 200);
  EXPECT_EQ(m.peak_total(), 250);
  m.reset_peak();
  EXPECT_EQ(m.peak().parameters, 50);
}

TEST(MemoryAccounting, PeaksWithActivations) {
  MemoryAccounting m;
  m.record({100, 0, 0}, 500);
  m.record({100, 100, 50}, 10);
  EXPECT_EQ(m.peak_total(), 250);
  EXPECT_EQ(m.peak_activations(), 500);
  EXPECT_EQ(m.peak_with_activations(), 600);
  EXPECT_EQ(m.activations_now(), 10);
  m.reset_peak();
  EXPECT_EQ(m.peak_with_activations(), 260);
}

TEST(MemoryAccounting, OptimizerStateOfSgdAndAdamW) {
  at::Tensor w = at::zeros({1000}).set_requires_grad(true);
  w.mutable_grad() = at::ones_like(w);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.1).momentum(0.9));
  EXPECT_EQ(storage_bytes(optimizer_state_tensors(sgd)), 0);  // lazily created
  sgd.step();
  EXPECT_EQ(storage_bytes(optimizer_state_tensors(sgd)), 4000);
  torch::optim::AdamW adamw({w}, torch::optim::AdamWOptions(0.1));
  adamw.step();
  EXPECT_EQ(storage_bytes(optimizer_state_tensors(adamw)), 8000);
  EXPECT_EQ(storage_bytes(gradients_of({w})), 4000);
}

}  // namespace
}  // namespace tandem::parallel
