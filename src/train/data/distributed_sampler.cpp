#include "tandem/train/data/distributed_sampler.h"

#include <numeric>

#include "tandem/core/check.h"
#include "train/data/portable_random.h"

namespace tandem::train {

void validate(const SamplerOptions& o) {
  TANDEM_CHECK(o.num_samples >= 1, "DistributedSampler: num_samples must be at least 1 (got {})",
               o.num_samples);
  TANDEM_CHECK(o.world_size >= 1, "DistributedSampler: world_size must be at least 1 (got {})",
               o.world_size);
  TANDEM_CHECK(o.rank >= 0 && o.rank < o.world_size,
               "DistributedSampler: rank must be in [0, world_size={}) (got {})", o.world_size,
               o.rank);
  TANDEM_CHECK(o.epoch >= 0, "DistributedSampler: epoch must be non-negative (got {})", o.epoch);
  const int64_t shard = shard_size(o.num_samples, o.world_size, o.drop_last);
  TANDEM_CHECK(o.start_offset >= 0 && o.start_offset <= shard,
               "DistributedSampler: start_offset must be in [0, {}] (the samples per rank of an "
               "epoch) (got {})",
               shard, o.start_offset);
}

int64_t shard_size(int64_t num_samples, int world_size, bool drop_last) {
  TANDEM_CHECK(world_size >= 1, "shard_size: world_size must be at least 1 (got {})", world_size);
  return drop_last ? num_samples / world_size : (num_samples + world_size - 1) / world_size;
}

std::vector<int64_t> epoch_order(int64_t num_samples, bool shuffle, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(num_samples));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle) return order;
  // Fisher-Yates, from the back, drawing j uniformly in [0, i].
  detail::Xoshiro256 rng(detail::mix_seed(seed, static_cast<uint64_t>(epoch)));
  for (int64_t i = num_samples - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

std::vector<int64_t> compute_shard(const SamplerOptions& options, int64_t epoch) {
  validate(options);
  TANDEM_CHECK(epoch >= 0, "DistributedSampler: epoch must be non-negative (got {})", epoch);
  const int64_t per_rank = shard_size(options.num_samples, options.world_size, options.drop_last);
  std::vector<int64_t> order =
      epoch_order(options.num_samples, options.shuffle, options.seed, epoch);
  // Padding repeats the order from its start, cyclically when the padding is
  // longer than the order (N < W), as PyTorch does; drop_last truncates.
  std::vector<int64_t> shard;
  shard.reserve(static_cast<size_t>(per_rank - options.start_offset));
  for (int64_t k = options.start_offset; k < per_rank; ++k) {
    const int64_t position = k * options.world_size + options.rank;
    shard.push_back(order[static_cast<size_t>(position % options.num_samples)]);
  }
  return shard;
}

DistributedSampler::DistributedSampler(const SamplerOptions& options)
    : options_(options), epoch_(options.epoch), start_offset_(options.start_offset) {
  validate(options_);
}

void DistributedSampler::set_epoch(int64_t epoch) {
  TANDEM_CHECK(epoch >= 0, "DistributedSampler::set_epoch: epoch must be non-negative (got {})",
               epoch);
  if (epoch != epoch_) start_offset_ = 0;
  epoch_ = epoch;
}

std::vector<int64_t> DistributedSampler::indices() const {
  SamplerOptions o = options_;
  o.start_offset = start_offset_;
  o.epoch = epoch_;
  return compute_shard(o, epoch_);
}

int64_t DistributedSampler::size() const {
  return shard_size(options_.num_samples, options_.world_size, options_.drop_last) - start_offset_;
}

}  // namespace tandem::train
