#include "tandem/train/models/convnet.h"

#include <ATen/Context.h>
#include <ATen/ops/randn.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/normalization.h>

#include "tandem/core/error.h"
#include "tests/train/models/model_checks.h"

namespace tandem::train {
namespace {

using testing::expect_invalid_argument;

TEST(ConvNet, OutputShapeForMnistAndCifar) {
  ConvNet mnist;
  EXPECT_EQ(mnist->forward(at::randn({4, 1, 28, 28})).sizes(), (std::vector<int64_t>{4, 10}));
  ConvNet cifar(ConvNetOptions{.in_channels = 3, .image_size = 32, .channels = {16, 32, 32}});
  EXPECT_EQ(cifar->forward(at::randn({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 10}));
}

TEST(ConvNet, ParameterCount) {
  // conv 1->32 (288) + bn 64, conv 32->64 (18432) + bn 128, head 64*7*7*10 + 10.
  int64_t expected = 288 + 64 + 18432 + 128 + 3136 * 10 + 10;
  EXPECT_EQ(testing::parameter_count(*ConvNet()), expected);
}

TEST(ConvNet, NormLayersAreBatchNorm2dByDefault) {
  ConvNet model;
  ASSERT_EQ(model->norms().size(), 2u);
  for (const auto& norm : model->norms()) {
    EXPECT_NE(norm.ptr()->as<torch::nn::BatchNorm2d>(), nullptr);
  }
  EXPECT_EQ(model->named_buffers().size(), 6u);  // running mean, var, count per layer.
}

TEST(ConvNet, NormFactoryReplacesTheLayers) {
  int calls = 0;
  ConvNetOptions options;
  options.norm = [&](int64_t features) {
    ++calls;
    return torch::nn::AnyModule(torch::nn::GroupNorm(1, features));
  };
  ConvNet model(options);
  EXPECT_EQ(calls, 2);
  EXPECT_NE(model->norms()[0].ptr()->as<torch::nn::GroupNorm>(), nullptr);
  EXPECT_EQ(model->forward(at::randn({2, 1, 28, 28})).sizes(), (std::vector<int64_t>{2, 10}));
  options.norm = [](int64_t) { return torch::nn::AnyModule(); };
  expect_invalid_argument([&] { ConvNet bad(options); }, "empty module");
}

TEST(ConvNet, GradientsReachEveryParameter) {
  ConvNet model(ConvNetOptions{.channels = {4, 8}});
  testing::expect_gradients_everywhere(*model,
                                       model->forward(at::randn({3, 1, 28, 28})).pow(2).sum());
}

TEST(ConvNet, SameSeedSameParameters) {
  at::manual_seed(11);
  ConvNet a;
  at::manual_seed(11);
  ConvNet b;
  testing::expect_equal_parameters(*a, *b);
}

TEST(ConvNet, RejectsBadOptionsAndInput) {
  expect_invalid_argument([] { ConvNet(ConvNetOptions{.channels = {}}); }, "stages");
  expect_invalid_argument([] { ConvNet(ConvNetOptions{.image_size = 3}); }, "image_size 3");
  expect_invalid_argument([] { ConvNet(ConvNetOptions{.in_channels = 0}); }, "in_channels");
  ConvNet model;
  expect_invalid_argument([&] { model->forward(at::randn({2, 3, 32, 32})); }, "[batch, 1, 28, 28]");
}

}  // namespace
}  // namespace tandem::train
