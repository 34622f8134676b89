// make_dataset: builds the dataset a trainer flag names: "synthetic-mnist",
// "synthetic-cifar", "synthetic-tokens", or a path whose format is given or
// detected. Not collective; every rank calls it with the same arguments.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "tandem/train/data/dataset.h"

namespace tandem::train {

enum class DataFormat { kAuto, kMnist, kCifar, kTokens };
enum class DataSplit { kTrain, kTest };

struct DatasetOptions {
  // kAuto detects from the path: a directory holding
  // train-images-idx3-ubyte (t10k-... for the test split) is MNIST, one
  // holding data_batch_*.bin (test_batch.bin) is CIFAR-10, a *.bin or *.tokens
  // file is a token file.
  DataFormat format = DataFormat::kAuto;
  DataSplit split = DataSplit::kTrain;
  // Token data: context length (>= 1) and vocabulary: synthetic tokens
  // draw from it, a token file's ids must lie below it.
  int64_t context = 64;
  int64_t vocab_size = 256;
  // Synthetic data: number of samples (0 = the real data set's size) and
  // seed. The test split draws other samples (SyntheticOptions::stream) from the
  // same class patterns, so it differs from the train split but is learnable.
  int64_t synthetic_size = 0;
  uint64_t seed = 0;
  // Synthetic data: weight of per-sample noise in [0, 1] (SyntheticOptions::noise).
  double noise = 0.25;
};

// Throws tandem::InvalidArgument for an unknown spec, a path whose format
// cannot be detected (naming the path and what was looked for) or a
// directory without the split's files, and tandem::Error for a malformed
// file.
std::unique_ptr<Dataset> make_dataset(const std::string& spec, const DatasetOptions& options = {});

}  // namespace tandem::train
