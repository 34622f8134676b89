#include "tandem/train/models/models.h"

#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>

#include "tandem/core/error.h"
#include "tests/train/models/model_checks.h"

namespace tandem::train {
namespace {

// Small settings for every model, so each builds and runs quickly.
ModelOptions small_options() {
  ModelOptions options;
  options.resnet50 = {.classes = 10, .image_size = 64, .stem = ResNetStem::kImageNet};
  options.gpt_mini = {.vocab = 40, .context = 8, .layers = 1, .width = 16, .heads = 2};
  return options;
}

at::Tensor synthetic_input(const ModelInput& spec, int64_t batch) {
  if (spec.dtype == c10::kLong)
    return at::randint(spec.token_range, spec.input_shape(batch), at::kLong);
  return at::randn(spec.input_shape(batch));
}

TEST(Models, EveryNameBuildsAndMatchesItsInputSpec) {
  const ModelOptions options = small_options();
  for (const std::string& name : model_names()) {
    SCOPED_TRACE(name);
    torch::nn::AnyModule model = make_model(name, options);
    ASSERT_FALSE(model.is_empty());
    ModelInput spec = input_spec(name, options);
    model.ptr()->eval();
    at::Tensor logits = model.forward(synthetic_input(spec, 2));
    std::vector<int64_t> expected = spec.target_batch_shape(2);
    expected.push_back(spec.classes);
    EXPECT_EQ(logits.sizes(), expected);
  }
}

TEST(Models, InputSpecs) {
  const ModelOptions defaults;
  EXPECT_EQ(input_spec("mlp").input_shape(4), (std::vector<int64_t>{4, 784}));
  EXPECT_EQ(input_spec("convnet").input_shape(4), (std::vector<int64_t>{4, 1, 28, 28}));
  EXPECT_EQ(input_spec("resnet18").input_shape(4), (std::vector<int64_t>{4, 3, 32, 32}));
  ModelInput resnet50 = input_spec("resnet50");
  EXPECT_EQ(resnet50.input_shape(1), (std::vector<int64_t>{1, 3, 224, 224}));
  EXPECT_EQ(resnet50.classes, 1000);
  ModelInput gpt = input_spec("gpt-mini");
  EXPECT_EQ(gpt.dtype, c10::kLong);
  EXPECT_EQ(gpt.token_range, defaults.gpt_mini.vocab);
  EXPECT_EQ(gpt.target_batch_shape(2), (std::vector<int64_t>{2, defaults.gpt_mini.context}));
  EXPECT_TRUE(input_spec("mlp").target_shape.empty());
}

TEST(Models, UnknownNameListsTheKnownOnes) {
  testing::expect_invalid_argument([] { make_model("resnet101"); },
                                   "unknown model 'resnet101'; known models: mlp, convnet, "
                                   "resnet18, resnet50, gpt-mini");
  testing::expect_invalid_argument([] { input_spec("lenet"); }, "known models");
}

TEST(Models, BadOptionsReachTheModel) {
  ModelOptions options;
  options.gpt_mini.heads = 3;
  testing::expect_invalid_argument([&] { make_model("gpt-mini", options); }, "divisible");
}

}  // namespace
}  // namespace tandem::train
