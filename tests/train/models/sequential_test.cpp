// sequential_layers: the Sequential shares the model's parameters (the same
// tensors, in the same order) and its forward computes the model's logits;
// models that do not split are named.
#include "tandem/train/models/sequential.h"

#include <ATen/ops/equal.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include "tandem/core/error.h"
#include "tandem/train/models/models.h"

namespace tandem::train {
namespace {

TEST(SequentialLayers, ShareTheParametersAndComputeTheSameLogits) {
  for (const std::string name : {"mlp", "gpt-mini"}) {
    at::manual_seed(1);
    torch::nn::AnyModule model = make_model(name);
    torch::nn::Sequential layers = sequential_layers(name, model);
    auto mine = layers->parameters(), want = model.ptr()->parameters();
    ASSERT_EQ(mine.size(), want.size()) << name;
    for (size_t i = 0; i < mine.size(); ++i) {
      EXPECT_TRUE(mine[i].is_same(want[i])) << name << " parameter " << i;
    }
    const ModelInput spec = input_spec(name);
    at::Tensor x = spec.dtype == at::kLong
                       ? at::randint(0, spec.token_range, spec.input_shape(2), at::kLong)
                       : at::randn(spec.input_shape(2));
    EXPECT_TRUE(at::equal(layers->forward(x), model.forward(x))) << name;
  }
}

TEST(SequentialLayers, ModelsThatDoNotSplitAreNamed) {
  EXPECT_FALSE(has_sequential_layers("resnet18"));
  torch::nn::AnyModule convnet = make_model("convnet");
  try {
    sequential_layers("convnet", convnet);
    FAIL() << "convnet split";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("mlp and gpt-mini"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem::train
