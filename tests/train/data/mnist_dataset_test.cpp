#include "tandem/train/data/mnist_dataset.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <gtest/gtest.h>

#include "tandem/core/error.h"
#include "tandem/train/data/fixture_writer.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::expect_error;
using testing::TempDir;

struct Fixture {
  TempDir dir;
  std::string images = dir.file("train-images-idx3-ubyte");
  std::string labels = dir.file("train-labels-idx1-ubyte");
  at::Tensor image_bytes =
      at::arange(5 * 4 * 3, at::kLong).remainder(256).to(at::kByte).view({5, 4, 3});
  at::Tensor label_values = at::arange(5, at::kLong).mul(2);
  Fixture() { write_mnist_idx(images, labels, image_bytes, label_values); }
};

TEST(MnistDataset, RoundTripEqualsSource) {
  Fixture f;
  MnistDataset d(f.images, f.labels);
  ASSERT_EQ(d.size(), 5);
  for (int64_t i = 0; i < 5; ++i) {
    const Example e = d.get(i);
    EXPECT_EQ(e.input.sizes(), (at::IntArrayRef{1, 4, 3}));
    EXPECT_EQ(e.input.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(e.input, f.image_bytes[i].unsqueeze(0).to(at::kFloat).div(255.0)));
    EXPECT_EQ(e.target.scalar_type(), at::kLong);
    EXPECT_EQ(e.target.item<int64_t>(), 2 * i);
  }
  const std::vector<int64_t> idx{4, 0, 2};
  const Example b = d.batch(idx);
  EXPECT_EQ(b.input.sizes(), (at::IntArrayRef{3, 1, 4, 3}));
  EXPECT_EQ(b.target.sizes(), (at::IntArrayRef{3}));
  EXPECT_EQ(b.target[0].item<int64_t>(), 8);
  EXPECT_THROW(d.get(5), InvalidArgument);
}

TEST(MnistDataset, TruncatedImagesNameFileAndProblem) {
  Fixture f;
  testing::truncate_by(f.images, 7);
  expect_error<Error>([&] { MnistDataset d(f.images, f.labels); },
                      {f.images, "size mismatch", "truncated"});
}

TEST(MnistDataset, TruncatedHeaderNamesFile) {
  Fixture f;
  testing::write_all(f.labels, {0, 0, 8});
  expect_error<Error>([&] { MnistDataset d(f.images, f.labels); }, {f.labels, "truncated header"});
}

TEST(MnistDataset, WrongMagicNamesFile) {
  Fixture f;
  auto bytes = testing::read_all(f.images);
  bytes[3] = 1;  // 2051 -> 2049: a label file where images belong
  testing::write_all(f.images, bytes);
  expect_error<Error>([&] { MnistDataset d(f.images, f.labels); },
                      {f.images, "wrong magic number 2049", "expected 2051"});
}

TEST(MnistDataset, CountMismatchNamesBothFiles) {
  Fixture f;
  write_mnist_idx(f.dir.file("x"), f.labels, f.image_bytes, f.label_values);
  write_mnist_idx(f.images, f.dir.file("y"), f.image_bytes.narrow(0, 0, 4),
                  f.label_values.narrow(0, 0, 4));
  expect_error<Error>([&] { MnistDataset d(f.images, f.labels); },
                      {f.images, f.labels, "count mismatch", "4 images", "5 labels"});
}

// Three dims of 2^32 - 1 multiply past int64: an error naming the file and
// the dims, not a wrapped size.
TEST(MnistDataset, HeaderDimsThatOverflowNameFileAndDims) {
  Fixture f;
  auto bytes = testing::read_all(f.images);
  for (size_t i = 4; i < 16; ++i) bytes[i] = static_cast<char>(0xFF);
  testing::write_all(f.images, bytes);
  expect_error<Error>([&] { MnistDataset d(f.images, f.labels); },
                      {f.images, "corrupt header", "[4294967295, 4294967295, 4294967295]"});
}

// A label the ten-class models cannot take fails at load, naming the file,
// the index and the value, not mid-forward on one rank.
TEST(MnistDataset, LabelAboveNineNamesFileIndexAndValue) {
  Fixture f;
  at::Tensor labels = f.label_values.clone();
  labels[3] = 12;
  write_mnist_idx(f.images, f.labels, f.image_bytes, labels);
  expect_error<Error>([&] { MnistDataset d(f.images, f.labels); },
                      {f.labels, "label 3 is 12", "expected 0-9"});
}

TEST(MnistDataset, MissingFileNamesIt) {
  TempDir dir;
  expect_error<Error>([&] { MnistDataset d(dir.file("nope"), dir.file("nope2")); },
                      {dir.file("nope"), "cannot open"});
}

}  // namespace
}  // namespace tandem::train
