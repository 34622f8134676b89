#include "tandem/train/data/token_dataset.h"

#include <ATen/ops/equal.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include "tandem/core/error.h"
#include "tandem/train/data/fixture_writer.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::expect_error;
using testing::TempDir;

TEST(TokenDataset, WindowsMatchSource) {
  TempDir dir;
  const std::vector<int64_t> values{1, 65535, 300, 0, 7, 256, 42};
  const at::Tensor tokens = at::tensor(values, at::kLong);
  write_token_file(dir.file("t.bin"), tokens);
  // Little-endian uint16 on disk, whatever the host.
  const auto bytes = testing::read_all(dir.file("t.bin"));
  ASSERT_EQ(bytes.size(), 14u);
  EXPECT_EQ(static_cast<uint8_t>(bytes[4]), 300 & 0xFF);
  EXPECT_EQ(static_cast<uint8_t>(bytes[5]), 300 >> 8);

  TokenDataset d(dir.file("t.bin"), 3);
  ASSERT_EQ(d.size(), 4);
  for (int64_t i = 0; i < d.size(); ++i) {
    const Example e = d.get(i);
    EXPECT_TRUE(at::equal(e.input, tokens.narrow(0, i, 3)));
    EXPECT_TRUE(at::equal(e.target, tokens.narrow(0, i + 1, 3)));
  }
  const std::vector<int64_t> idx{3, 1};
  const Example b = d.batch(idx);
  EXPECT_EQ(b.input.sizes(), (at::IntArrayRef{2, 3}));
  EXPECT_TRUE(at::equal(b.target[0], tokens.narrow(0, 4, 3)));
}

TEST(TokenDataset, OddLengthNamesFile) {
  TempDir dir;
  write_token_file(dir.file("t.bin"), at::tensor(std::vector<int64_t>{1, 2, 3, 4}, at::kLong));
  testing::truncate_by(dir.file("t.bin"), 1);
  expect_error<Error>([&] { TokenDataset d(dir.file("t.bin"), 2); },
                      {dir.file("t.bin"), "size mismatch", "7 bytes is odd"});
}

TEST(TokenDataset, ShorterThanOneWindowNamesFile) {
  TempDir dir;
  write_token_file(dir.file("t.bin"), at::tensor(std::vector<int64_t>{1, 2, 3, 4}, at::kLong));
  expect_error<Error>([&] { TokenDataset d(dir.file("t.bin"), 4); },
                      {dir.file("t.bin"), "holds 4 tokens", "context + 1 = 5"});
  TokenDataset ok(dir.file("t.bin"), 3);
  EXPECT_EQ(ok.size(), 1);
  EXPECT_THROW(TokenDataset(dir.file("t.bin"), 0), InvalidArgument);
}

// Token ids at or above the vocabulary fail at load, naming the file, the
// index and the value (a model's embedding would fail mid-forward).
TEST(TokenDataset, IdsOutsideTheVocabularyNameFileIndexAndValue) {
  TempDir dir;
  write_token_file(dir.file("t.bin"), at::tensor(std::vector<int64_t>{1, 2, 300, 4, 5}, at::kLong));
  expect_error<Error>([&] { TokenDataset d(dir.file("t.bin"), 2, 256); },
                      {dir.file("t.bin"), "token 2 is 300", "vocabulary of 256"});
  EXPECT_EQ(TokenDataset(dir.file("t.bin"), 2, 301).size(), 3);
  EXPECT_EQ(TokenDataset(dir.file("t.bin"), 2).size(), 3);  // any uint16 by default
  EXPECT_THROW(TokenDataset(dir.file("t.bin"), 2, 0), InvalidArgument);
}

TEST(TokenDataset, WriterRejectsOutOfRangeTokens) {
  TempDir dir;
  expect_error<InvalidArgument>(
      [&] {
        write_token_file(dir.file("t.bin"), at::tensor(std::vector<int64_t>{1, 65536}, at::kLong));
      },
      {dir.file("t.bin"), "token 65536 at 1"});
}

}  // namespace
}  // namespace tandem::train
