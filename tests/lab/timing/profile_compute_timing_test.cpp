// The compute profile adds up: the layers' forward and backward medians plus
// optimizer_s and other_s come within 15% of the median step. Each part is
// a median of its own, so a preempted moment drops out of the part it hit
// but stays in the step; on a busy machine (a 2-rank job beside it on 2
// cores) the parts fall 20-30% short. This binary runs alone (RUN_SERIAL):
// the property is about time.
#include <gtest/gtest.h>

#include "lab/profile_compute.h"

namespace tandem::lab {
namespace {

void expect_parts_add_up(train::ModelKind model, int64_t batch, int steps,
                         const train::ModelOptions& options = {}) {
  ProfileComputeOptions o;
  o.model = model;
  o.model_options = options;
  o.batch_size = batch;
  o.warmup = 2;
  o.steps = steps;
  const sim::ComputeProfile p = profile_compute(o);
  const double parts = p.forward_s() + p.backward_s() + p.optimizer_s + p.other_s;
  EXPECT_NEAR(parts, p.step_s, 0.15 * p.step_s)
      << p.model << ": forward " << p.forward_s() << " backward " << p.backward_s() << " optimizer "
      << p.optimizer_s << " other " << p.other_s << " step " << p.step_s << " (IQR "
      << p.step_spread_s << ")";
  for (const auto& l : p.layers) {
    EXPECT_GT(l.forward_s, 0.0) << l.name;
    EXPECT_GT(l.backward_s, 0.0) << l.name;
  }
}

TEST(ProfileComputeTiming, MlpPartsAddUpToTheStep) {
  expect_parts_add_up(train::ModelKind::kMlp, 32, 20);
}

TEST(ProfileComputeTiming, ResNet18PartsAddUpToTheStep) {
  expect_parts_add_up(train::ModelKind::kResNet18, 2, 10);
}

TEST(ProfileComputeTiming, GptMiniPartsAddUpToTheStep) {
  train::ModelOptions small;
  small.gpt_mini.layers = 2;
  small.gpt_mini.context = 32;
  expect_parts_add_up(train::ModelKind::kGptMini, 4, 10, small);
}

}  // namespace
}  // namespace tandem::lab
