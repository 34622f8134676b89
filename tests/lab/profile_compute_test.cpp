#include "lab/profile_compute.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

#include "tandem/core/error.h"
#include "tandem/core/trace.h"

namespace tandem::lab {
namespace {

using train::ModelKind;

// What holds however busy the machine is: every layer took time both ways
// and has its sizes. (That the parts add up to the step is a property about
// time: tests/lab/timing/.)
void expect_well_formed(const sim::ComputeProfile& p) {
  EXPECT_GT(p.step_s, 0.0);
  EXPECT_GT(p.optimizer_s, 0.0);
  for (const auto& l : p.layers) {
    EXPECT_GT(l.forward_s, 0.0) << l.name;
    EXPECT_GT(l.backward_s, 0.0) << l.name;
    EXPECT_GE(l.forward_spread_s, 0.0) << l.name;
    EXPECT_GT(l.param_bytes, 0) << l.name;
    EXPECT_EQ(l.grad_bytes, l.param_bytes) << l.name;
    EXPECT_GT(l.activation_bytes, 0) << l.name;
    EXPECT_GT(l.output_bytes, 0) << l.name;
  }
}

std::vector<LayerParams> expected_layers(ModelKind kind) {
  torch::nn::AnyModule model = train::make_model(kind);
  return parameterised_layers(*model.ptr());
}

TEST(ProfileCompute, MlpLayersComeInForwardOrderWithTheirSizes) {
  ProfileComputeOptions o;
  o.model = ModelKind::kMlp;
  o.batch_size = 16;
  o.warmup = 2;
  o.steps = 8;
  const sim::ComputeProfile p = profile_compute(o);
  EXPECT_EQ(p.model, "mlp");
  EXPECT_EQ(p.dtype, "float32");
  EXPECT_EQ(p.batch_size, 16);
  EXPECT_EQ(p.steps, 8);
  EXPECT_EQ(p.model_version.size(), 16u);
  // Default mlp: 784 -> 256 -> 256 -> 10, in registration (= forward) order.
  const auto want = expected_layers(ModelKind::kMlp);
  ASSERT_EQ(p.layers.size(), 3u);
  ASSERT_EQ(want.size(), 3u);
  const int64_t params[] = {(784 * 256 + 256) * 4, (256 * 256 + 256) * 4, (256 * 10 + 10) * 4};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(p.layers[i].name, "fc" + std::to_string(i));
    EXPECT_EQ(p.layers[i].name, want[i].name);
    EXPECT_EQ(p.layers[i].param_bytes, params[i]);
    EXPECT_EQ(p.layers[i].param_bytes, want[i].param_bytes);
  }
  // A layer's output is what follows its ReLU: [16, 256] floats; logits last.
  EXPECT_EQ(p.layers[0].output_bytes, 16 * 256 * 4);
  EXPECT_EQ(p.layers[1].output_bytes, 16 * 256 * 4);
  EXPECT_EQ(p.layers[2].output_bytes, 16 * 10 * 4);
  // Saved for backward: each ReLU's result and the logits; the batch itself,
  // and the Linear outputs the ReLUs consumed, do not count.
  EXPECT_EQ(p.layers[0].activation_bytes, 16 * 256 * 4);
  EXPECT_EQ(p.layers[1].activation_bytes, 16 * 256 * 4);
  EXPECT_EQ(p.layers[2].activation_bytes, 16 * 10 * 4);
  EXPECT_EQ(p.param_bytes(), params[0] + params[1] + params[2]);
  expect_well_formed(p);
}

TEST(ProfileCompute, Float64DoublesTheBytes) {
  ProfileComputeOptions o;
  o.batch_size = 4;
  o.warmup = 1;
  o.steps = 2;
  o.dtype = train::Dtype::kFloat64;
  const sim::ComputeProfile p = profile_compute(o);
  EXPECT_EQ(p.dtype, "float64");
  EXPECT_EQ(p.layers[0].param_bytes, (784 * 256 + 256) * 8);
  EXPECT_EQ(p.layers[2].output_bytes, 4 * 10 * 8);
}

TEST(ProfileCompute, ResNet18HasEveryParameterisedModuleOnce) {
  ProfileComputeOptions o;
  o.model = ModelKind::kResNet18;
  o.batch_size = 2;
  o.warmup = 1;
  o.steps = 3;
  const sim::ComputeProfile p = profile_compute(o);
  std::multiset<std::string> got, want;
  int64_t want_bytes = 0;
  for (const auto& l : p.layers) got.insert(l.name);
  for (const auto& l : expected_layers(ModelKind::kResNet18)) {
    want.insert(l.name);
    want_bytes += l.param_bytes;
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(p.param_bytes(), want_bytes);
  // The stem runs first, the classifier last.
  EXPECT_EQ(p.layers.front().name, expected_layers(ModelKind::kResNet18).front().name);
  EXPECT_EQ(p.layers.back().name, expected_layers(ModelKind::kResNet18).back().name);
  expect_well_formed(p);
}

TEST(ProfileCompute, GptMiniProfilesEveryLayer) {
  ProfileComputeOptions o;
  o.model = ModelKind::kGptMini;
  o.model_options.gpt_mini.layers = 2;
  o.model_options.gpt_mini.context = 32;
  o.batch_size = 2;
  o.warmup = 1;
  o.steps = 3;
  const sim::ComputeProfile p = profile_compute(o);
  torch::nn::AnyModule model = train::make_model(o.model, o.model_options);
  EXPECT_EQ(p.layers.size(), parameterised_layers(*model.ptr()).size());
  // The two embeddings run first, in the order the compiler evaluates `+`'s operands.
  EXPECT_NE(p.layers[0].name.find("embedding"), std::string::npos) << p.layers[0].name;
  EXPECT_NE(p.layers[1].name.find("embedding"), std::string::npos) << p.layers[1].name;
  EXPECT_EQ(p.layers.back().name, "lm_head");
  expect_well_formed(p);
}

TEST(ProfileCompute, TraceHasTheThreeLanes) {
  TraceRecorder trace(0);
  ProfileComputeOptions o;
  o.batch_size = 4;
  o.warmup = 1;
  o.steps = 2;
  o.trace = &trace;
  profile_compute(o);
  int forward = 0, backward = 0, optimizer = 0;
  for (const auto& e : trace.events()) {
    forward += e.lane == "forward";
    backward += e.lane == "backward";
    optimizer += e.lane == "optimizer";
    EXPECT_LE(e.start_us, e.end_us) << e.name;
  }
  // Two timed steps of three layers.
  EXPECT_EQ(forward, 6);
  EXPECT_EQ(backward, 6);
  EXPECT_EQ(optimizer, 2);
}

TEST(ProfileCompute, ModelVersionFollowsTheArchitecture) {
  torch::nn::AnyModule a = train::make_model(ModelKind::kMlp);
  torch::nn::AnyModule b = train::make_model(ModelKind::kMlp);
  train::ModelOptions wide;
  wide.mlp.hidden_sizes = {512};
  torch::nn::AnyModule c = train::make_model(ModelKind::kMlp, wide);
  EXPECT_EQ(model_version(*a.ptr()), model_version(*b.ptr()));
  EXPECT_NE(model_version(*a.ptr()), model_version(*c.ptr()));
}

TEST(ProfileCompute, BadOptionsNameTheField) {
  ProfileComputeOptions o;
  o.batch_size = 0;
  try {
    profile_compute(o);
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("batch_size must be >= 1 (got 0)"), std::string::npos)
        << e.what();
  }
  o.batch_size = 1;
  o.steps = 0;
  EXPECT_THROW(profile_compute(o), InvalidArgument);
}

}  // namespace
}  // namespace tandem::lab
