#include "tandem/train/data/synthetic_dataset.h"

#include <ATen/ops/equal.h>
#include <gtest/gtest.h>

#include "tandem/core/error.h"
#include "tandem/train/data/cifar_dataset.h"
#include "tandem/train/data/fixture_writer.h"
#include "tandem/train/data/mnist_dataset.h"
#include "tandem/train/data/token_dataset.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::TempDir;

SyntheticOptions opts(SyntheticKind kind, int64_t size, uint64_t seed) {
  SyntheticOptions o;
  o.kind = kind;
  o.size = size;
  o.seed = seed;
  o.context = 16;
  return o;
}

TEST(SyntheticDataset, SamplesAreDeterministicAcrossObjects) {
  for (auto kind : {SyntheticKind::kMnist, SyntheticKind::kCifar, SyntheticKind::kTokens}) {
    SyntheticDataset a(opts(kind, 100, 5)), b(opts(kind, 100, 5)), c(opts(kind, 100, 6));
    for (int64_t i : {0, 1, 63, 64, 99}) {
      EXPECT_TRUE(at::equal(a.get(i).input, b.get(i).input));
      EXPECT_TRUE(at::equal(a.get(i).target, b.get(i).target));
    }
    EXPECT_FALSE(at::equal(a.get(3).input, c.get(3).input));
    // Reading out of order gives the same samples as in order.
    const std::vector<int64_t> idx{99, 1, 64};
    EXPECT_TRUE(at::equal(a.batch(idx).input[1], b.get(1).input));
  }
}

TEST(SyntheticDataset, ImagesHaveRealShapesAndRange) {
  SyntheticDataset mnist(opts(SyntheticKind::kMnist, 10, 0));
  SyntheticDataset cifar(opts(SyntheticKind::kCifar, 10, 0));
  EXPECT_EQ(mnist.get(0).input.sizes(), (at::IntArrayRef{1, 28, 28}));
  EXPECT_EQ(cifar.get(0).input.sizes(), (at::IntArrayRef{3, 32, 32}));
  EXPECT_EQ(mnist.get(0).target.scalar_type(), at::kLong);
  for (int64_t i = 0; i < 10; ++i) {
    const Example e = cifar.get(i);
    EXPECT_GE(e.input.min().item<float>(), 0.0f);
    EXPECT_LE(e.input.max().item<float>(), 1.0f);
    EXPECT_GE(e.target.item<int64_t>(), 0);
    EXPECT_LT(e.target.item<int64_t>(), 10);
  }
  EXPECT_EQ(SyntheticDataset(opts(SyntheticKind::kMnist, 0, 0)).size(), 60000);
}

TEST(SyntheticDataset, ImagesOfOneClassAreCloserThanAcrossClasses) {
  // Learnability: the class pattern dominates the noise.
  SyntheticDataset d(opts(SyntheticKind::kMnist, 200, 1));
  std::vector<at::Tensor> by_class(10);
  std::vector<at::Tensor> other(10);
  for (int64_t i = 0; i < 200; ++i) {
    const Example e = d.get(i);
    const int64_t label = e.target.item<int64_t>();
    (by_class[label].defined() ? other[label] : by_class[label]) = e.input;
  }
  int checked = 0;
  for (int c = 0; c < 10; ++c) {
    const int n = (c + 1) % 10;
    if (!other[c].defined() || !by_class[n].defined()) continue;
    const float same = by_class[c].sub(other[c]).abs().mean().item<float>();
    const float diff = by_class[c].sub(by_class[n]).abs().mean().item<float>();
    EXPECT_LT(same, diff) << "class " << c;
    ++checked;
  }
  EXPECT_GE(checked, 5);
}

TEST(SyntheticDataset, TokensFollowTheRuleMostly) {
  SyntheticDataset d(opts(SyntheticKind::kTokens, 1000, 2));
  int64_t follows = 0, total = 0;
  for (int64_t i = 0; i < 1000; i += 16) {
    const Example e = d.get(i);
    EXPECT_TRUE(at::equal(e.input.narrow(0, 1, 15), e.target.narrow(0, 0, 15)));
    for (int64_t t = 0; t < 16; ++t, ++total) {
      const int64_t x = e.input[t].item<int64_t>();
      follows += e.target[t].item<int64_t>() == (5 * x + 3) % 256;
    }
  }
  EXPECT_GT(follows, total * 6 / 10);
}

TEST(SyntheticDataset, FixturesRoundTripThroughRealFormats) {
  TempDir dir;
  SyntheticDataset mnist(opts(SyntheticKind::kMnist, 20, 3));
  const auto mnist_files = write_mnist_dir(dir.file("mnist"), mnist, 12);
  MnistDataset mnist_read(mnist_files[0], mnist_files[1]);
  ASSERT_EQ(mnist_read.size(), 12);
  SyntheticDataset cifar(opts(SyntheticKind::kCifar, 20, 3));
  const auto cifar_files = write_cifar_dir(dir.file("cifar"), cifar, 9, 2);
  ASSERT_EQ(cifar_files.size(), 2u);
  CifarDataset cifar_read(cifar_files);
  ASSERT_EQ(cifar_read.size(), 9);
  for (int64_t i = 0; i < 9; ++i) {
    for (auto [source, read] :
         {std::pair<const Dataset*, const Dataset*>{&mnist, &mnist_read}, {&cifar, &cifar_read}}) {
      const Example s = source->get(i), r = read->get(i);
      EXPECT_TRUE(at::equal(s.target, r.target));
      EXPECT_LE(s.input.sub(r.input).abs().max().item<float>(), 0.5f / 255.0f + 1e-6f);
    }
  }
  SyntheticOptions t = opts(SyntheticKind::kTokens, 50, 3);
  SyntheticDataset tokens(t);
  write_token_file(dir.file("t.tokens"), SyntheticDataset::token_stream(t, 0, 50 + 16));
  TokenDataset tokens_read(dir.file("t.tokens"), 16);
  ASSERT_EQ(tokens_read.size(), 50);
  for (int64_t i : {0, 17, 49}) {
    EXPECT_TRUE(at::equal(tokens.get(i).input, tokens_read.get(i).input));
    EXPECT_TRUE(at::equal(tokens.get(i).target, tokens_read.get(i).target));
  }
}

TEST(SyntheticDataset, RejectsBadOptions) {
  SyntheticOptions o = opts(SyntheticKind::kTokens, 10, 0);
  o.vocab_size = 1;
  testing::expect_error<InvalidArgument>([&] { SyntheticDataset d(o); },
                                         {"synthetic-tokens", "vocab_size", "got 1"});
  o = opts(SyntheticKind::kMnist, -1, 0);
  EXPECT_THROW(SyntheticDataset{o}, InvalidArgument);
  SyntheticDataset d(opts(SyntheticKind::kMnist, 3, 0));
  testing::expect_error<InvalidArgument>([&] { d.get(3); }, {"synthetic-mnist", "index 3"});
}

}  // namespace
}  // namespace tandem::train
