// The activation tracker counts the storages that forward ops create and
// that are still alive: what autograd saved, or what the caller holds.
#include "tandem/memory/activation_tracker.h"

#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/tanh.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <thread>

#include "tandem/core/error.h"
#include "tandem/memory/storage_set.h"

namespace tandem::memory {
namespace {

at::Tensor weight() { return at::randn({64, 32}, at::kDouble).set_requires_grad(true); }

// Ops pass their inputs through (mm's contiguous() returns x and w), so the
// tracker watches x and w too: x because mm saves it for w's gradient, w as
// model state, which the accounting leaves out.
TEST(ActivationTracker, CountsWhatForwardLeavesAliveUntilBackwardFreesIt) {
  at::Tensor w = weight();
  at::Tensor x = at::randn({16, 64}, at::kDouble);
  StorageSet model_state;
  model_state.add({w});
  ActivationTracker tracker;
  EXPECT_EQ(ActivationTracker::current(), &tracker);
  at::Tensor h = at::mm(x, w);
  at::Tensor r = at::tanh(h);  // saves its output for backward
  at::Tensor loss = r.sum();
  EXPECT_EQ(tracker.alive_bytes(model_state), x.nbytes() + h.nbytes() + r.nbytes() + loss.nbytes());
  EXPECT_EQ(tracker.alive_bytes(StorageSet()),
            w.nbytes() + x.nbytes() + h.nbytes() + r.nbytes() + loss.nbytes());
  h.reset();  // the graph keeps no copy of mm's output (tanh saved its own) ...
  EXPECT_EQ(tracker.alive_bytes(model_state), x.nbytes() + r.nbytes() + loss.nbytes());
  loss.backward();  // ... and backward frees what mm and tanh saved; w.grad is not watched
  x.reset();
  r.reset();
  loss.reset();
  EXPECT_TRUE(w.grad().defined());
  EXPECT_EQ(tracker.alive_bytes(model_state), 0);
}

TEST(ActivationTracker, OpsWithoutGradModeAreNotWatched) {
  at::Tensor w = weight();
  ActivationTracker tracker;
  at::Tensor h;
  {
    c10::NoGradGuard no_grad;
    h = at::relu(at::mm(at::ones({8, 64}, at::kDouble), w));
  }
  EXPECT_EQ(tracker.alive_bytes(StorageSet()), 0);
  EXPECT_EQ(tracker.watched_storages(), 0);
}

TEST(ActivationTracker, ModelStateIsLeftOut) {
  at::Tensor w = weight();
  ActivationTracker tracker;
  at::Tensor wt = w.t();  // a view made in forward shares the parameter's storage
  EXPECT_EQ(tracker.alive_bytes(StorageSet()), w.nbytes());
  StorageSet model_state;
  model_state.add({w});
  EXPECT_EQ(tracker.alive_bytes(model_state), 0);
  EXPECT_EQ(activation_bytes(model_state), 0);
  EXPECT_EQ(activation_bytes(StorageSet()), w.nbytes());
}

TEST(ActivationTracker, OnePerThreadAndOnlyItsThread) {
  at::Tensor w = weight();
  ActivationTracker tracker;
  EXPECT_THROW(ActivationTracker second, InvalidArgument);
  at::Tensor elsewhere;
  std::thread other([&] {
    EXPECT_EQ(ActivationTracker::current(), nullptr);
    EXPECT_EQ(activation_bytes(StorageSet()), 0);
    ActivationTracker its_own;  // another thread may arm its own
    elsewhere = at::mm(at::ones({4, 64}, at::kDouble), w);
  });
  other.join();
  EXPECT_EQ(tracker.watched_storages(), 0);
  EXPECT_EQ(ActivationTracker::current(), &tracker);
}

TEST(ActivationTracker, ForgetsDeadStorages) {
  at::Tensor w = weight();
  ActivationTracker tracker;
  for (int i = 0; i < 5000; ++i) at::mm(at::ones({1, 64}, at::kDouble), w);
  EXPECT_LT(tracker.watched_storages(), 3000);  // 3 new storages per loop: pruned on the way
  EXPECT_EQ(tracker.alive_bytes(StorageSet()), w.nbytes());
  EXPECT_EQ(tracker.watched_storages(), 1);  // w only
}
}  // namespace
}  // namespace tandem::memory
