#include "tandem/train/data/make_dataset.h"

#include <ATen/ops/arange.h>
#include <gtest/gtest.h>

#include "tandem/core/error.h"
#include "tandem/train/choices.h"
#include "tandem/train/data/fixture_writer.h"
#include "tandem/train/data/synthetic_dataset.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::expect_error;
using testing::TempDir;

TEST(MakeDataset, SyntheticSpecs) {
  DatasetOptions o;
  o.synthetic_size = 32;
  o.context = 8;
  EXPECT_EQ(make_dataset("synthetic-mnist", o)->get(0).input.sizes(), (at::IntArrayRef{1, 28, 28}));
  EXPECT_EQ(make_dataset("synthetic-cifar", o)->get(0).input.sizes(), (at::IntArrayRef{3, 32, 32}));
  auto tokens = make_dataset("synthetic-tokens", o);
  EXPECT_EQ(tokens->size(), 32);
  EXPECT_EQ(tokens->get(0).input.sizes(), (at::IntArrayRef{8}));
}

TEST(MakeDataset, DetectsRealFormats) {
  TempDir dir;
  SyntheticOptions s;
  s.size = 6;
  write_mnist_dir(dir.file("mnist"), SyntheticDataset(s), 6);
  s.kind = SyntheticKind::kCifar;
  write_cifar_dir(dir.file("cifar"), SyntheticDataset(s), 6, 3);
  write_token_file(dir.file("t.bin"), at::arange(20, at::kLong));

  auto mnist = make_dataset(dir.file("mnist"));
  EXPECT_NE(mnist->describe().find("MNIST"), std::string::npos);
  EXPECT_EQ(mnist->size(), 6);
  auto cifar = make_dataset(dir.file("cifar"));
  EXPECT_NE(cifar->describe().find("CIFAR-10"), std::string::npos);
  EXPECT_EQ(cifar->size(), 6);
  DatasetOptions o;
  o.context = 4;
  EXPECT_EQ(make_dataset(dir.file("t.bin"), o)->size(), 16);
  // An explicit format reads a token file whatever its name.
  std::filesystem::copy_file(dir.file("t.bin"), dir.file("corpus.dat"));
  o.format = parse_choice<DataFormat>("tokens");
  EXPECT_EQ(make_dataset(dir.file("corpus.dat"), o)->size(), 16);
}

TEST(MakeDataset, ClearErrors) {
  TempDir dir;
  expect_error<InvalidArgument>([&] { make_dataset(dir.file("missing")); },
                                {dir.file("missing"), "no such file"});
  expect_error<InvalidArgument>([&] { make_dataset(dir.path().string()); },
                                {"cannot detect the format", "train-images-idx3-ubyte",
                                 "data_batch_*.bin", "--data-format mnist|cifar|tokens"});
  testing::write_all(dir.file("notes.txt"), {'x'});
  expect_error<InvalidArgument>([&] { make_dataset(dir.file("notes.txt")); },
                                {dir.file("notes.txt"), "cannot detect"});
  expect_error<InvalidArgument>([] { parse_choice<DataFormat>("imagenet"); },
                                {"imagenet", "auto, mnist, cifar, tokens"});
  // A malformed file found by detection still names the file.
  testing::write_all(dir.file("bad.bin"), {1, 2, 3});
  expect_error<Error>([&] { make_dataset(dir.file("bad.bin")); }, {dir.file("bad.bin"), "odd"});
}

// A token file's ids are checked against the vocabulary the options give
// (the trainer's: the model's), and an explicit format on a directory without
// the split's files names what is missing.
TEST(MakeDataset, TokenVocabularyAndMissingSplitsAreNamed) {
  TempDir dir;
  write_token_file(dir.file("t.bin"), at::arange(20, at::kLong));
  DatasetOptions o;
  o.context = 4;
  o.vocab_size = 10;
  expect_error<Error>([&] { make_dataset(dir.file("t.bin"), o); },
                      {dir.file("t.bin"), "token 10 is 10", "vocabulary of 10"});
  SyntheticOptions s;
  s.size = 6;
  write_mnist_dir(dir.file("mnist"), SyntheticDataset(s), 6);  // the train split only
  DatasetOptions test;
  test.format = DataFormat::kMnist;
  test.split = DataSplit::kTest;
  expect_error<InvalidArgument>([&] { make_dataset(dir.file("mnist"), test); },
                                {dir.file("mnist"), "no MNIST file t10k-images-idx3-ubyte"});
}

}  // namespace
}  // namespace tandem::train
