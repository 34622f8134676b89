#include "tandem/memory/memory_accounting.h"

#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "tandem/memory/activation_tracker.h"

namespace tandem::memory {
namespace {

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

TEST(MemoryAccounting, PeaksWithActivationsAndWhereTheyWereSampled) {
  MemoryAccounting m;
  m.record({100, 0, 0}, 500, MemoryPoint::kBackwardBegins);
  m.record({100, 100, 50}, 10, MemoryPoint::kBackwardEnds);
  EXPECT_EQ(m.peak_total(), 250);
  EXPECT_EQ(m.peak_activations(), 500);
  EXPECT_EQ(m.peak_with_activations(), 600);
  EXPECT_EQ(m.peak_point(), MemoryPoint::kBackwardBegins);
  EXPECT_EQ(m.activations_now(), 10);
  m.reset_peak();
  EXPECT_EQ(m.peak_with_activations(), 260);
  EXPECT_EQ(m.peak_point(), MemoryPoint::kBackwardEnds);
  EXPECT_STREQ(to_string(m.peak_point()), "BackwardEnds");
}

// Each storage counts once, under the first kind that lists it; the bytes
// measured elsewhere are added to the optimizer state as they are.
TEST(MemoryAccounting, SampleCountsEachStorageOnceUnderItsFirstKind) {
  at::Tensor flat = at::zeros({100});                 // 400 bytes
  at::Tensor grad = at::zeros({10}, at::kDouble);     // 80 bytes
  at::Tensor moment = at::zeros({25}, at::kDouble);   // 200 bytes
  ModelStateTensors held;
  held.parameters = {flat, flat.narrow(0, 0, 50)};
  held.gradients = {grad, flat.narrow(0, 50, 50)};
  held.optimizer_state = {moment, grad};
  held.optimizer_state_bytes = 1000;
  MemoryAccounting m;
  m.sample(held, MemoryPoint::kOptimizerStepped);
  EXPECT_EQ(m.now().parameters, 400);
  EXPECT_EQ(m.now().gradients, 80);
  EXPECT_EQ(m.now().optimizer_state, 1200);
  EXPECT_EQ(m.activations_now(), 0);  // no tracker armed
  EXPECT_EQ(m.peak_point(), MemoryPoint::kOptimizerStepped);
}

// Under an armed tracker a sample adds the live activations, less the
// storages it counted as model state.
TEST(MemoryAccounting, SampleAddsTheActivationsBesideTheModelState) {
  at::Tensor w = at::ones({4, 8}, at::kDouble).set_requires_grad(true);
  ActivationTracker tracker;
  at::Tensor x = at::ones({2, 8}, at::kDouble);
  at::Tensor h = at::mm(x, w.t());  // w.t() shares w's storage
  MemoryAccounting m;
  m.sample({w}, {}, {});
  EXPECT_EQ(m.now().parameters, w.nbytes());
  EXPECT_EQ(m.activations_now(), x.nbytes() + h.nbytes());
  EXPECT_EQ(m.peak_with_activations(), w.nbytes() + x.nbytes() + h.nbytes());
}

}  // namespace
}  // namespace tandem::memory
