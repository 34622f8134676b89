// Sharded checkpoints for ZeRO and FSDP: every rank writes only the shard of
// the model state it owns, and a checkpoint written by W ranks loads at any
// world size (resharding) or folds into one plain LibTorch file.
//
// The state is a list of flat groups (ZeRO buckets, FSDP units), each a
// FlatLayout split over ranks with shard_range(numel, W, rank). A rank's
// share of a group is its slice of the flat parameters plus, per optimizer
// state field (SGD's momentum_buffer, Adam's exp_avg and exp_avg_sq, ...),
// the same slice of that field's flat vector. Because the layout does not
// depend on W, resharding is concatenating the old slices and cutting new
// ones.
//
// On disk: DIR/step-<N>/rank-<r>.ckpt, one file per rank in the format of
// checkpoint_file.h (atomic, checksummed) whose header "sharding" field holds the
// group layouts, and whose "shard" sections hold "g<i>/param" and
// "g<i>/<field>". Rank 0's file also holds the buffers (replicated state).
// DIR/latest names step-<N> only after every rank's file is complete, so a
// crash mid-write leaves the previous checkpoint as the latest.
//
// The same rank checkpoints also travel in memory (elastic training keeps
// each rank's shard on a buddy rank): shard_checkpoint builds one,
// encode_checkpoint / decode_checkpoint (checkpoint_file.h) carry it, and
// reshard_checkpoints verifies and reshards them as read_sharded_checkpoint
// does the files.
//
// write_sharded_checkpoint is collective; reading is not (each rank reads
// the files it needs). Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/parallel/flat_layout.h"
#include "tandem/train/checkpoint_file.h"

namespace torch::optim {
class Optimizer;
}

namespace tandem::train {

// One flat group of a sharded state, as held by one rank.
struct ShardGroup {
  parallel::FlatLayout layout;     // entries in flat order (entry.index is not saved)
  std::vector<std::string> names;  // the parameter name of each entry, in flat order
  at::Tensor params;               // this rank's shard_range(layout.numel, W, rank) slice
  // Optimizer state, per field: a tensor of params.numel() elements (a
  // slice of the field's flat vector), or, for a per-group counter such as
  // Adam's step, a tensor of one element that every rank holds equal.
  std::vector<std::pair<std::string, at::Tensor>> optimizer;
};

struct ShardedState {
  std::vector<ShardGroup> groups;
};

// Collective. Rank r writes DIR/step-<base.step>/rank-<r>.ckpt with `base`'s
// step, sampler position, seed, meta and RNG state, `state`'s shards, and
// (rank 0 only) `base`'s buffers; base.parameters and base.optimizer_state
// must be empty. After a barrier, rank 0 points DIR/latest at the step
// directory. Returns the step directory. Throws CheckpointError naming the
// file if a write fails (the other ranks then fail at the barrier, within
// the communicator's timeout).
std::string write_sharded_checkpoint(const std::string& dir, Checkpoint base,
                                     const ShardedState& state, Communicator& comm);

// The checkpoint of rank `rank` of `world_size` for `state`, as
// write_sharded_checkpoint writes it to DIR/step-<N>/rank-<r>.ckpt: `base`'s
// step, sampler position, seed, meta and RNG state, the layout and shards of
// `state` (the tensors are shared, not copied), and for rank 0 `base`'s
// buffers. InvalidArgument unless base.parameters and base.optimizer_state
// are empty. Not collective.
Checkpoint shard_checkpoint(Checkpoint base, const ShardedState& state, int rank, int world_size);

// True if `path` (e.g. from latest_checkpoint) is a sharded checkpoint's
// step directory.
bool is_sharded_checkpoint(const std::string& path);

struct LoadedShards {
  Checkpoint base;      // rank 0's file: step, sampler position, meta, buffers; RNG of `rank`
  int saved_world_size = 0;
  ShardedState state;   // resharded to (rank, world_size)
};

// Reads every rank's file in a step directory, verifies them (checksums,
// equal layouts and steps, the number of files) and returns `rank`'s share
// at `world_size`, resharding when it differs from the saved world size.
// The RNG state is the saved rank's when it exists, else rank 0's. Throws
// CheckpointError naming the file and the field.
LoadedShards read_sharded_checkpoint(const std::string& step_dir, int rank, int world_size);

// What read_sharded_checkpoint does once the files are read, for rank
// checkpoints already in memory: `checkpoints[q]` is rank q's (from
// shard_checkpoint, or decoded), its `path` naming it in errors. Verifies
// them (one per saved rank, equal layouts and steps, every shard's length)
// and returns `rank`'s share at `world_size`. Throws CheckpointError naming
// the checkpoint and the field. Not collective.
LoadedShards reshard_checkpoints(std::vector<Checkpoint> checkpoints, int rank, int world_size);

// Throws CheckpointError (naming the checkpoint and the first difference)
// unless the saved groups have the same names, shapes, dtypes and order as
// `current` (the layout of the model being restored).
void check_same_layout(const LoadedShards& loaded, const ShardedState& current,
                       const std::string& path);

// Reads a sharded checkpoint and writes every full parameter and buffer to
// `out` as a LibTorch archive that torch::load(module, out) reads into a
// plain model (no Tandem needed). Throws CheckpointError.
void consolidate_checkpoint(const std::string& step_dir, const std::string& out);

// The state of `optimizer` for one parameter tensor as named tensors, in the
// ShardGroup::optimizer convention (SGD: momentum_buffer; Adam and AdamW:
// exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad, and "step" as one int64).
// Empty when the optimizer has no state for it yet. The tensors are flat
// copies, never views of the optimizer's state. NotSupported for other
// optimizers.
std::vector<std::pair<std::string, at::Tensor>> optimizer_state_of(
    const torch::optim::Optimizer& optimizer, const at::Tensor& param);

// The reverse: installs `fields` as the state of `param` (which must be one
// of the optimizer's parameters). Throws CheckpointError on a missing or
// misshapen field.
void set_optimizer_state(torch::optim::Optimizer& optimizer, const at::Tensor& param,
                         const std::vector<std::pair<std::string, at::Tensor>>& fields);

// The same for a shard the optimizer steps as several pieces (consecutive
// slices, in order; ZeroRedundancyOptimizer::optimizer_pieces): the fields
// are those of the whole shard, each piece's concatenated, so the format
// does not depend on how the shard was cut. Pieces must all have state or
// all have none ("step" must agree; InternalError otherwise).
std::vector<std::pair<std::string, at::Tensor>> optimizer_state_of(
    const torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& pieces);
void set_optimizer_state(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& pieces,
                         const std::vector<std::pair<std::string, at::Tensor>>& fields);

}  // namespace tandem::train
