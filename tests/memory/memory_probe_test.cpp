#include "tandem/memory/memory_probe.h"

#include <ATen/ops/ones.h>
#include <ATen/ops/tanh.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "tandem/core/error.h"
#include "tandem/memory/activation_tracker.h"

namespace tandem::memory {
namespace {

// A stand-in strategy: one parameter, and a gradient buffer it allocates.
struct Holder {
  at::Tensor param = at::zeros({64}, at::kDouble).set_requires_grad(true);
  at::Tensor buffer;
  int collected = 0;
  MemoryProbe probe{[this](ModelStateTensors& held) {
    ++collected;
    held.parameters = {param};
    held.gradients = {buffer};
  }};
};

TEST(MemoryProbe, SamplesWhatTheStrategyHoldsAtEachPoint) {
  Holder h;
  h.probe.at(MemoryPoint::kConstructed);
  EXPECT_EQ(h.probe.accounting().now().parameters, 512);
  EXPECT_EQ(h.probe.accounting().now().gradients, 0);
  h.buffer = at::zeros({32}, at::kDouble);
  h.probe.at(MemoryPoint::kGradientBufferAllocated);
  EXPECT_EQ(h.probe.accounting().now().gradients, 256);
  h.buffer = at::Tensor();
  h.probe.at(MemoryPoint::kGradientBufferReleased);
  EXPECT_EQ(h.probe.accounting().now().gradients, 0);
  EXPECT_EQ(h.probe.accounting().peak().gradients, 256);
  EXPECT_EQ(h.probe.accounting().peak_point(), MemoryPoint::kGradientBufferAllocated);
  EXPECT_EQ(h.collected, 3);
  h.probe.reset_peak();
  EXPECT_EQ(h.probe.accounting().peak().gradients, 0);
  EXPECT_EQ(h.probe.accounting().peak_point(), MemoryPoint::kGradientBufferReleased);
}

// The backward-begins sample exists for the activations: without a tracker
// it is skipped, with one it counts them beside the model state.
TEST(MemoryProbe, BackwardBeginsIsSampledOnlyUnderAnArmedTracker) {
  Holder h;
  EXPECT_FALSE(MemoryProbe::samples(MemoryPoint::kBackwardBegins));
  EXPECT_TRUE(MemoryProbe::samples(MemoryPoint::kBackwardEnds));
  h.probe.at(MemoryPoint::kBackwardBegins);
  EXPECT_EQ(h.collected, 0);
  ActivationTracker tracker;
  EXPECT_TRUE(MemoryProbe::samples(MemoryPoint::kBackwardBegins));
  at::Tensor out = at::tanh(h.param);  // saved for backward: 512 bytes alive
  h.probe.at(MemoryPoint::kBackwardBegins);
  EXPECT_EQ(h.collected, 1);
  EXPECT_EQ(h.probe.accounting().activations_now(), out.nbytes());
  EXPECT_EQ(h.probe.accounting().peak_point(), MemoryPoint::kBackwardBegins);
}

TEST(MemoryProbe, AnEmptyCollectFunctionIsRefused) {
  EXPECT_THROW(MemoryProbe(nullptr), InvalidArgument);
}

}  // namespace
}  // namespace tandem::memory
