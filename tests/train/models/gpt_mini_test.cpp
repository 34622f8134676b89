#include "tandem/train/models/gpt_mini.h"

#include <ATen/Context.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>

#include "tandem/core/error.h"
#include "tests/train/models/model_checks.h"

namespace tandem::train {
namespace {

using testing::expect_invalid_argument;

GptMiniOptions small_options() {
  return {.vocab = 50, .context = 16, .layers = 2, .width = 32, .heads = 4};
}

TEST(GptMini, OutputShape) {
  GptMini model(small_options());
  at::Tensor tokens = at::randint(50, {3, 10}, at::kLong);
  EXPECT_EQ(model->forward(tokens).sizes(), (std::vector<int64_t>{3, 10, 50}));
  EXPECT_EQ(model->forward(at::randint(50, {1, 16}, at::kLong)).sizes(),
            (std::vector<int64_t>{1, 16, 50}));
}

TEST(GptMini, ParameterCount) {
  const int64_t v = 50, t = 16, c = 32, layers = 2;
  // Per block: 2 LayerNorms, qkv, proj, fc (4x), fc_proj.
  const int64_t block =
      2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c);
  const int64_t expected = v * c + t * c + layers * block + 2 * c + (c * v + v);
  EXPECT_EQ(testing::parameter_count(*GptMini(small_options())), expected);
}

TEST(GptMini, IsCausal) {
  GptMini model(small_options());
  model->eval();
  at::Tensor tokens = at::randint(50, {2, 12}, at::kLong);
  at::Tensor logits = model->forward(tokens);
  for (int64_t t : {0, 5, 10}) {
    at::Tensor changed = tokens.clone();
    changed.slice(1, t + 1) = (changed.slice(1, t + 1) + 1) % 50;
    at::Tensor other = model->forward(changed);
    EXPECT_TRUE(other.slice(1, 0, t + 1).allclose(logits.slice(1, 0, t + 1), 1e-5, 1e-6))
        << "logits at positions <= " << t << " depend on later tokens";
    EXPECT_FALSE(other.slice(1, t + 1).allclose(logits.slice(1, t + 1), 1e-5, 1e-6))
        << "logits after " << t << " ignore the changed tokens";
  }
}

TEST(GptMini, GradientsReachEveryParameter) {
  GptMini model(small_options());
  at::Tensor tokens = at::arange(48, at::kLong).view({3, 16});
  at::Tensor logits = model->forward(tokens);
  at::Tensor loss = (logits * at::randn(logits.sizes())).sum();
  testing::expect_gradients_everywhere(*model, loss);
}

TEST(GptMini, SameSeedSameParameters) {
  at::manual_seed(5);
  GptMini a(small_options());
  at::manual_seed(5);
  GptMini b(small_options());
  testing::expect_equal_parameters(*a, *b);
}

TEST(GptMini, RejectsBadOptionsAndInput) {
  expect_invalid_argument([] { GptMini(GptMiniOptions{.width = 30, .heads = 4}); },
                          "divisible by heads");
  expect_invalid_argument([] { GptMini(GptMiniOptions{.vocab = 0}); }, "vocab");
  expect_invalid_argument([] { GptMini(GptMiniOptions{.dropout = 1.0}); }, "dropout");
  GptMini model(small_options());
  expect_invalid_argument(
      [&] {
        model->forward(at::randint(50, {1, 17}, at::kLong));
      },
      "longer than its context of 16");
  expect_invalid_argument([&] { model->forward(at::randn({1, 4})); }, "int64 tokens");
}

}  // namespace
}  // namespace tandem::train
