// SyntheticDataset: deterministic stand-ins for MNIST, CIFAR-10 and a token
// corpus, of any size. Sample i is a pure function of (seed, i), computed with
// a portable PRNG, so it is the same on every rank, run and platform, and
// independent of LibTorch's RNG state. The data are learnable:
//  - images: label = hash(seed, i) % 10; pixels = a fixed per-class pattern
//    (drawn from the seed) blended with per-sample noise, so a classifier's
//    loss goes down;
//  - tokens: a stream where each token is (5 * previous + 3) mod vocab, except
//    that every 64th position restarts at a random token and a `noise`
//    fraction of positions is random; sample i is the window at position i,
//    as in TokenDataset.
// Immutable after construction, so thread-safe. Not collective.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/train/data/dataset.h"

namespace tandem::train {

enum class SyntheticKind { kMnist, kCifar, kTokens };

struct SyntheticOptions {
  SyntheticKind kind = SyntheticKind::kMnist;
  // Samples (>= 1); 0 picks the real data set's size: 60000 (MNIST), 50000
  // (CIFAR-10) or 1,000,000 token windows.
  int64_t size = 0;
  // Selects the class patterns, labels, noise and token stream.
  uint64_t seed = 0;
  // Which draw of samples: 0 for the train split, 1 for the test split.
  // Changes the samples (labels, noise, token noise) but keeps the class
  // patterns and the token rule, so a model trained on one split can be
  // evaluated on the other.
  uint64_t stream = 0;
  // Tokens only: context length T (>= 1) and vocabulary size (2..65536).
  int64_t context = 64;
  int64_t vocab_size = 256;
  // Weight of per-sample noise in [0, 1]: images blend pattern and noise
  // with it; tokens are random with this probability.
  double noise = 0.25;
};

class SyntheticDataset : public Dataset {
 public:
  // Throws tandem::InvalidArgument naming the bad field.
  explicit SyntheticDataset(const SyntheticOptions& options);

  int64_t size() const override { return size_; }
  Example get(int64_t index) const override;
  std::string describe() const override;

  const SyntheticOptions& options() const { return options_; }

  // Tokens [first, first + count) of the synthetic stream of (seed,
  // vocab_size, noise); TokenDataset windows over the same stream read the
  // same samples. int64 [count]. Pure.
  static at::Tensor token_stream(const SyntheticOptions& options, int64_t first, int64_t count);

 private:
  Example get_image(int64_t index) const;

  SyntheticOptions options_;
  int64_t size_;
  std::vector<float> patterns_;  // images: [10, C*H*W] class patterns in [0, 1]
};

}  // namespace tandem::train
