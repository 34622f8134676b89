#include "tandem/train/models/mlp.h"

#include <ATen/Context.h>
#include <ATen/ops/randn.h>

#include "tandem/core/error.h"
#include "tests/train/models/model_checks.h"

namespace tandem::train {
namespace {

using testing::expect_invalid_argument;
using testing::parameter_count;

TEST(Mlp, OutputShapeFromFlatAndImageInput) {
  Mlp model;
  EXPECT_EQ(model->forward(at::randn({4, 784})).sizes(), (std::vector<int64_t>{4, 10}));
  EXPECT_EQ(model->forward(at::randn({3, 1, 28, 28})).sizes(), (std::vector<int64_t>{3, 10}));
}

TEST(Mlp, ParameterCountMatchesSizes) {
  // 784*256+256 + 256*256+256 + 256*10+10.
  EXPECT_EQ(parameter_count(*Mlp()), 269322);
  EXPECT_EQ(mlp_parameter_count({}), 269322);
  MlpOptions options{.input_size = 20, .hidden_sizes = {7}, .classes = 3};
  EXPECT_EQ(parameter_count(*Mlp(options)), 20 * 7 + 7 + 7 * 3 + 3);
  options.hidden_sizes.clear();
  EXPECT_EQ(parameter_count(*Mlp(options)), 20 * 3 + 3);
}

TEST(Mlp, GradientsReachEveryParameter) {
  Mlp model(MlpOptions{.input_size = 12, .hidden_sizes = {16, 8}, .classes = 5});
  testing::expect_gradients_everywhere(*model, model->forward(at::randn({6, 12})).pow(2).sum());
}

TEST(Mlp, SameSeedSameParameters) {
  at::manual_seed(7);
  Mlp a;
  at::manual_seed(7);
  Mlp b;
  testing::expect_equal_parameters(*a, *b);
}

TEST(Mlp, RejectsBadOptionsAndInput) {
  expect_invalid_argument([] { Mlp(MlpOptions{.input_size = 0}); }, "input_size");
  expect_invalid_argument([] { Mlp(MlpOptions{.hidden_sizes = {8, -1}}); }, "hidden_sizes[1]");
  expect_invalid_argument([] { Mlp(MlpOptions{.classes = 0}); }, "classes");
  Mlp model;
  expect_invalid_argument([&] { model->forward(at::randn({2, 100})); }, "784 features");
}

}  // namespace
}  // namespace tandem::train
