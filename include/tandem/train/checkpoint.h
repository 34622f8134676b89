// Training checkpoints: the model's parameters and buffers by name, the
// optimizer state, the step, the sampler position, the seed, the world size
// and the CPU RNG state, in one file per checkpoint.
//
// File layout (all integers little-endian):
//   "TNDMCKPT"            8 bytes, the magic
//   format version        uint32 (kCheckpointFormatVersion)
//   world size            uint32
//   header length         uint64
//   header checksum       uint64, XXH3_64bits of the header bytes
//   header                JSON: step, epoch, samples_in_epoch, seed, world_size,
//                         meta, sharding (version 2: null, or a sharded
//                         checkpoint's layout, see sharded_checkpoint.h),
//                         payload_size, payload_checksum (XXH3_64bits of the
//                         payload, as a hex string), sections: one entry per
//                         tensor or blob {section, name, dtype, shape,
//                         offset, nbytes}
//   payload               the sections' raw bytes
// Writing goes to DIR/step-<N>.tmp, is flushed and fsynced, then renamed to
// DIR/step-<N>.ckpt; DIR/latest (the file name of the newest checkpoint) is
// replaced the same way. Reading verifies the magic, version, both checksums
// and every offset before any tensor is built; every failure is a
// tandem::CheckpointError naming the file and the field.
// Not collective: with DDP every rank holds the same state, so rank 0 writes
// and every rank reads (the directory must be visible to all ranks).
// Not thread-safe for concurrent writers to the same directory.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/ordered_dict.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace tandem::train {

// Version 2 added the "sharding" header field and "shard" sections; version
// 1 files still load.
inline constexpr uint32_t kCheckpointFormatVersion = 2;

struct Checkpoint {
  int64_t step = 0;              // optimizer steps taken
  int64_t epoch = 0;             // the sampler's epoch at `step`
  int64_t samples_in_epoch = 0;  // samples of this epoch consumed per rank
  uint64_t seed = 0;
  int world_size = 1;
  // Free-form settings the run must match on resume (model, optimizer, ...).
  std::map<std::string, std::string> meta;
  std::vector<std::pair<std::string, at::Tensor>> parameters;  // CPU, by name
  std::vector<std::pair<std::string, at::Tensor>> buffers;     // CPU, by name
  std::string optimizer_state;  // a torch::serialize::OutputArchive's bytes
  at::Tensor rng_state;         // CPU generator state; undefined: none
  // Sharded checkpoints only (sharded_checkpoint.h): the layout as JSON text
  // ("" for a whole-model checkpoint) and this rank's flat shards by name.
  std::string sharding;
  std::vector<std::pair<std::string, at::Tensor>> shards;
  std::string path;             // the file it was read from (set by read)
};

// Copies `module`'s parameters and buffers (recursive names) into `ckpt`.
void capture_module(const torch::nn::Module& module, Checkpoint& ckpt);
// XXH3-64 of `module`'s parameters and buffers (kind, recursive name, dtype,
// shape and bytes, in registration order). Two replicas hold bitwise the same
// state exactly when their digests match (barring a 1-in-2^64 collision);
// tests use it to compare ranks and runs. Not collective.
uint64_t state_digest(const torch::nn::Module& module);
// The same digest from parameters and buffers given by name (for strategies
// whose module does not hold its parameters between steps, e.g. zero3).
uint64_t state_digest(const torch::OrderedDict<std::string, at::Tensor>& parameters,
                      const torch::OrderedDict<std::string, at::Tensor>& buffers);
// Serializes `optimizer`'s state into ckpt.optimizer_state.
void capture_optimizer(torch::optim::Optimizer& optimizer, Checkpoint& ckpt);
// Stores the default CPU generator's state.
void capture_rng(Checkpoint& ckpt);

// Writes `ckpt` atomically to DIR/step-<ckpt.step>.ckpt (creating DIR) and
// points DIR/latest at it. Returns the file's path. Throws CheckpointError
// naming the file when it cannot be written.
std::string write_checkpoint(const std::string& dir, const Checkpoint& ckpt);

// Writes `ckpt` atomically to exactly `path` (through `path`.tmp), touching
// no `latest` pointer. Throws CheckpointError naming the file.
void write_checkpoint_file(const std::string& path, const Checkpoint& ckpt);

// Reads and verifies one checkpoint file. Throws CheckpointError naming the
// file and the field (magic, version, header, checksum, section ...).
Checkpoint read_checkpoint(const std::string& path);

// Atomically points DIR/latest at `name` (a file or directory in DIR).
void write_latest(const std::string& dir, const std::string& name);

// The path DIR/latest points at (a file, or a sharded checkpoint's
// directory); throws CheckpointError when there is none.
std::string latest_checkpoint(const std::string& dir);
// read_checkpoint(latest_checkpoint(dir)).
Checkpoint load_latest(const std::string& dir);

// Throws CheckpointError unless the checkpoint was written at `world_size`.
void check_world_size(const Checkpoint& ckpt, int world_size);

// Copies the checkpoint's parameters and buffers into `module` after checking
// that the names, shapes and dtypes are exactly the module's (CheckpointError
// naming the file and the first differing tensor).
void restore_module(const Checkpoint& ckpt, torch::nn::Module& module);
// Loads ckpt.optimizer_state into `optimizer` (built over the same
// parameters, in the same order).
void restore_optimizer(const Checkpoint& ckpt, torch::optim::Optimizer& optimizer);
// Restores the default CPU generator's state, if the checkpoint has one.
void restore_rng(const Checkpoint& ckpt);

}  // namespace tandem::train
