#include "tandem/train/data/cifar_dataset.h"

#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "tandem/core/error.h"
#include "tandem/train/data/fixture_writer.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::expect_error;
using testing::TempDir;

TEST(CifarDataset, RoundTripOverTwoFilesEqualsSource) {
  TempDir dir;
  const at::Tensor images = at::randint(0, 256, {7, 3, 32, 32}, at::kLong).to(at::kByte);
  const at::Tensor labels = at::randint(0, 10, {7}, at::kLong);
  write_cifar_batch(dir.file("data_batch_1.bin"), images.narrow(0, 0, 4), labels.narrow(0, 0, 4));
  write_cifar_batch(dir.file("data_batch_2.bin"), images.narrow(0, 4, 3), labels.narrow(0, 4, 3));
  CifarDataset d({dir.file("data_batch_1.bin"), dir.file("data_batch_2.bin")});
  ASSERT_EQ(d.size(), 7);
  std::vector<int64_t> all{0, 1, 2, 3, 4, 5, 6};
  const Example b = d.batch(all);
  EXPECT_TRUE(at::equal(b.input, images.to(at::kFloat).div(255.0)));
  EXPECT_TRUE(at::equal(b.target, labels));
}

TEST(CifarDataset, FloatImagesRoundToBytes) {
  TempDir dir;
  const at::Tensor images = at::rand({2, 3, 32, 32});
  const at::Tensor labels = at::randint(0, 10, {2}, at::kLong);
  write_cifar_batch(dir.file("b.bin"), images, labels);
  CifarDataset d({dir.file("b.bin")});
  EXPECT_LE(d.get(1).input.sub(images[1]).abs().max().item<float>(), 0.5f / 255.0f + 1e-6f);
}

TEST(CifarDataset, TruncatedFileNamesFileAndProblem) {
  TempDir dir;
  write_cifar_batch(dir.file("data_batch_1.bin"), at::zeros({3, 3, 32, 32}, at::kByte),
                    at::zeros({3}, at::kLong));
  testing::truncate_by(dir.file("data_batch_1.bin"), 100);
  expect_error<Error>([&] { CifarDataset d({dir.file("data_batch_1.bin")}); },
                      {dir.file("data_batch_1.bin"), "size mismatch", "truncated after record 2"});
}

TEST(CifarDataset, BadLabelNamesRecord) {
  TempDir dir;
  write_cifar_batch(dir.file("b.bin"), at::zeros({2, 3, 32, 32}, at::kByte),
                    at::zeros({2}, at::kLong));
  auto bytes = testing::read_all(dir.file("b.bin"));
  bytes[kCifarRecordBytes] = 42;
  testing::write_all(dir.file("b.bin"), bytes);
  expect_error<Error>([&] { CifarDataset d({dir.file("b.bin")}); },
                      {dir.file("b.bin"), "record 1", "label 42"});
}

TEST(CifarDataset, EmptyFileAndEmptyList) {
  TempDir dir;
  testing::write_all(dir.file("e.bin"), {});
  expect_error<Error>([&] { CifarDataset d({dir.file("e.bin")}); }, {dir.file("e.bin"), "empty"});
  EXPECT_THROW(CifarDataset({}), InvalidArgument);
}

TEST(CifarDataset, WriterRejectsBadShapes) {
  TempDir dir;
  expect_error<InvalidArgument>(
      [&] {
        write_cifar_batch(dir.file("b.bin"), at::zeros({2, 1, 28, 28}), at::zeros({2}, at::kLong));
      },
      {dir.file("b.bin"), "[N, 3, 32, 32]"});
  expect_error<InvalidArgument>(
      [&] {
        write_cifar_batch(dir.file("b.bin"), at::zeros({2, 3, 32, 32}),
                          at::full({2}, 10, at::kLong));
      },
      {"label 10"});
}

}  // namespace
}  // namespace tandem::train
