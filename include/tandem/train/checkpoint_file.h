// The checkpoint file format and its atomic I/O: one Checkpoint (the
// model's parameters and buffers by name, the optimizer state, the step, the
// sampler position, the seed, the world size, the CPU RNG state, and for
// sharded checkpoints one rank's shards) per file, and DIR/latest naming the
// newest. Capturing LibTorch state into a Checkpoint and restoring it is
// checkpoint.h; sharded checkpoints (one file per rank) are
// sharded_checkpoint.h, in this same format.
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
// replaced the same way, so DIR/latest names only complete checkpoints.
// Reading verifies the magic, version, both checksums and every offset
// before any tensor is built; every failure is a tandem::CheckpointError
// naming the file and the field.
// Not collective. Not thread-safe for concurrent writers to the same
// directory.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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
  std::string path;  // the file it was read from (set by read)
};

// Throws CheckpointError "checkpoint 'PATH': field 'FIELD': WHAT", the form
// of every checkpoint failure.
[[noreturn]] void throw_checkpoint_error(const std::string& path, std::string_view field,
                                         const std::string& what);

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

// The bytes of the file write_checkpoint_file writes for `ckpt` (the same
// format, built in memory: elastic training sends checkpoints between
// ranks). Not collective.
std::string encode_checkpoint(const Checkpoint& ckpt);
// The reverse, with every check read_checkpoint makes; `source` names the
// bytes in errors and becomes the result's `path` ("the in-memory commit
// of rank 2 at step 7"). Throws CheckpointError naming `source` and the
// field. The result owns its tensors (`bytes` may go away).
Checkpoint decode_checkpoint(std::string_view bytes, const std::string& source);

// Atomically points DIR/latest at `name` (a file or directory in DIR).
void write_latest(const std::string& dir, const std::string& name);

// The path DIR/latest points at (a file, or a sharded checkpoint's
// directory), or nullopt when DIR or DIR/latest does not exist: no
// checkpoint was completed there yet. Throws CheckpointError when DIR/latest
// exists but cannot be read or names no checkpoint file in DIR.
std::optional<std::string> find_latest_checkpoint(const std::string& dir);
// The same, but a missing DIR/latest is a CheckpointError too.
std::string latest_checkpoint(const std::string& dir);
// read_checkpoint(latest_checkpoint(dir)).
Checkpoint load_latest(const std::string& dir);

}  // namespace tandem::train
