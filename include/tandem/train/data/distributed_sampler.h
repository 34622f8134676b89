// DistributedSampler: splits each epoch of a dataset into one disjoint shard
// per rank, like PyTorch's torch.utils.data.DistributedSampler. The epoch's
// order is a Fisher-Yates shuffle driven by a PRNG implemented here
// (splitmix64 + xoshiro256**), so it depends only on (seed, epoch): it is the
// same on every platform and untouched by LibTorch's RNG state.
// Not collective: every rank builds its own sampler with the same options
// except `rank`. Not thread-safe (set_epoch mutates); indices() is const.
#pragma once

#include <cstdint>
#include <vector>

namespace tandem::train {

struct SamplerOptions {
  // Samples in the dataset (>= 1).
  int64_t num_samples = 0;
  // Ranks sharing the epoch (>= 1) and this rank, in [0, world_size).
  int world_size = 1;
  int rank = 0;
  // Shuffle each epoch (default); false keeps 0, 1, 2, ... before sharding.
  bool shuffle = true;
  // Seeds the per-epoch shuffle; every rank must use the same value.
  uint64_t seed = 0;
  // false (default): pad the epoch by repeating indices from its start so
  // every rank gets ceil(N / W) samples (a few samples are seen twice).
  // true: drop the tail so every rank gets floor(N / W) (a few are skipped).
  bool drop_last = false;
  // The epoch the sampler starts in (>= 0).
  int64_t epoch = 0;
  // Samples of this rank's shard of `epoch` already consumed (for resume):
  // indices() skips them. In [0, shard size]. Cleared by set_epoch() to
  // another epoch.
  int64_t start_offset = 0;
};

// Samples per rank per epoch: ceil(N / W), or floor(N / W) with drop_last.
int64_t shard_size(int64_t num_samples, int world_size, bool drop_last);

// The whole epoch's order of 0..num_samples-1 for (seed, epoch): a permutation
// when `shuffle`, else the identity. Pure.
std::vector<int64_t> epoch_order(int64_t num_samples, bool shuffle, uint64_t seed, int64_t epoch);

// The indices `options.rank` reads in `epoch`, after skipping
// `options.start_offset`: the padded or truncated epoch order, taken with
// stride world_size from offset rank. Pure; tests call it for every rank.
// Throws tandem::InvalidArgument for invalid options.
std::vector<int64_t> compute_shard(const SamplerOptions& options, int64_t epoch);

// Throws tandem::InvalidArgument naming the first bad field.
void validate(const SamplerOptions& options);

class DistributedSampler {
 public:
  // Validates `options` (throws tandem::InvalidArgument).
  explicit DistributedSampler(const SamplerOptions& options);

  // Selects the epoch whose order indices() returns. Moving to a different
  // epoch clears start_offset; setting the current epoch again keeps it, so a
  // resumed loop may call set_epoch(resumed_epoch) as usual.
  void set_epoch(int64_t epoch);
  int64_t epoch() const { return epoch_; }
  int64_t start_offset() const { return start_offset_; }

  // This rank's indices for the current epoch, after start_offset.
  std::vector<int64_t> indices() const;

  // indices().size(), without computing them.
  int64_t size() const;

 private:
  SamplerOptions options_;
  int64_t epoch_;
  int64_t start_offset_;
};

}  // namespace tandem::train
