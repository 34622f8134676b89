#include "tandem/train/models/resnet.h"

#include <ATen/Context.h>
#include <ATen/ops/randn.h>
#include <torch/nn/modules/batchnorm.h>

#include "tandem/core/error.h"
#include "tests/train/models/model_checks.h"

namespace tandem::train {
namespace {

using testing::expect_invalid_argument;
using testing::parameter_count;

TEST(ResNet, Resnet18CifarParameterCountAndShape) {
  ResNet model = make_resnet18();
  EXPECT_EQ(parameter_count(*model), 11173962);
  EXPECT_EQ(model->forward(at::randn({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 10}));
}

TEST(ResNet, Resnet50ImageNetParameterCountAndShape) {
  ResNet model = make_resnet50({.classes = 1000, .stem = ResNetStem::kImageNet});
  EXPECT_EQ(parameter_count(*model), 25557032);
  model->eval();
  EXPECT_EQ(model->forward(at::randn({1, 3, 64, 64})).sizes(), (std::vector<int64_t>{1, 1000}));
}

TEST(ResNet, Resnet50WithFewClassesOnCifar) {
  ResNet model = make_resnet50({.classes = 10});
  // 990 fewer classes in the head; a 3x3 instead of a 7x7 stem conv.
  EXPECT_EQ(parameter_count(*model), 25557032 - 2048 * 990 - 990 - 3 * 64 * (49 - 9));
  EXPECT_EQ(model->forward(at::randn({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 10}));
}

TEST(ResNet, GradientsReachEveryParameter) {
  ResNet model = make_resnet18();
  testing::expect_gradients_everywhere(*model,
                                       model->forward(at::randn({2, 3, 32, 32})).pow(2).sum());
}

TEST(ResNet, BottleneckGradientsReachEveryParameter) {
  ResNet model = make_resnet50({.classes = 10, .stem = ResNetStem::kImageNet});
  testing::expect_gradients_everywhere(*model,
                                       model->forward(at::randn({2, 3, 64, 64})).pow(2).sum());
}

TEST(ResNet, NormFactoryBuildsEveryNormLayer) {
  int calls = 0;
  ResNetOptions options;
  options.norm = [&](int64_t features) {
    ++calls;
    return torch::nn::AnyModule(torch::nn::BatchNorm2d(features));
  };
  make_resnet18(options);
  // Stem, 2 per block (8 blocks), 3 shortcuts.
  EXPECT_EQ(calls, 1 + 16 + 3);
}

TEST(ResNet, SameSeedSameParameters) {
  at::manual_seed(3);
  ResNet a = make_resnet18();
  at::manual_seed(3);
  ResNet b = make_resnet18();
  testing::expect_equal_parameters(*a, *b);
}

TEST(ResNet, RejectsBadOptionsAndInput) {
  expect_invalid_argument([] { make_resnet18({.classes = 0}); }, "classes");
  expect_invalid_argument([] { make_resnet18({.image_size = 16}); }, "image_size");
  expect_invalid_argument(
      [] {
        ResNet(ResNetLayout{.blocks = {2, 0, 2, 2}}, ResNetOptions{});
      },
      "blocks[1]");
  ResNet model = make_resnet18();
  expect_invalid_argument([&] { model->forward(at::randn({2, 1, 32, 32})); }, "[batch, 3,");
}

}  // namespace
}  // namespace tandem::train
