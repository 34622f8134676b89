// Private to train/: the trainer's checkpoints. Finding and checking the
// checkpoint a run resumes from (--resume), restoring it into a strategy,
// and writing the run's checkpoints (--checkpoint-dir).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "tandem/comm/communicator.h"
#include "tandem/train/checkpoint.h"
#include "tandem/train/options.h"
#include "tandem/train/sharded_checkpoint.h"
#include "tandem/train/strategy.h"

namespace tandem::train {

// A checkpoint to resume from, read and checked against the run.
struct ResumePoint {
  // The step, the sampler position (rescaled to this world size), the seed,
  // the RNG state, and for a whole-model checkpoint the state itself.
  Checkpoint base;
  // A sharded checkpoint: this rank's shares at this world size.
  std::optional<LoadedShards> shards;
};

// Under o.checkpoint.resume: the checkpoint DIR/latest names, read and
// checked against `o` (model, data, global batch, dtype, optimizer,
// strategy, seed; the world size, or resharding for sharded checkpoints).
// nullopt when resume is off, or under kIfPresent when DIR holds no
// completed checkpoint yet. Not collective; call it before any collective.
// Throws CheckpointError naming the file and the field: under kRequire when
// there is none, for a corrupt or truncated file, for settings that differ.
std::optional<ResumePoint> find_resume_point(const TrainerOptions& o, int rank, int world_size);

// Reads the checkpoint at `path` (a whole-model file or a sharded step
// directory) for `rank` of `world_size` and checks it against `o`, as
// find_resume_point does DIR/latest. With `written_world` (elastic training
// falling back on disk, elastic_state.h): the settings are checked as those
// of a run of `written_world` ranks (the generation that lost its state),
// and a whole-model checkpoint of another world size has its sampler
// position rescaled as a sharded one's is. Not collective. Throws
// CheckpointError naming the file and the field.
ResumePoint read_resume_point(const TrainerOptions& o, const std::string& path, int rank,
                              int world_size, std::optional<int> written_world = std::nullopt);

// The settings a checkpoint written by `world_size` ranks of a run with
// options `o` records in its meta, and a resumed run must share for the
// data order and the optimizer state to carry over (model, data, global
// batch, dtype, optimizer, strategy).
std::map<std::string, std::string> run_meta(const TrainerOptions& o, int world_size);

// Moves ckpt.samples_in_epoch (per rank) from `saved_world` ranks to
// `world` and sets ckpt.world_size = world; an elastic run's checkpoint (meta
// position=global) counts global samples and keeps them. CheckpointError naming the
// checkpoint when the samples consumed do not split evenly over `world`.
void rescale_sampler_position(Checkpoint& ckpt, int saved_world, int world);

// Restores `point` into `strategy`: the model and optimizer state (and a
// sharded checkpoint's buffers) and the CPU RNG. Collective for the sharded
// strategies (ZeRO-1/2 gather the parameters).
void restore(const ResumePoint& point, Strategy& strategy);

// The position a checkpoint records: steps taken and the sampler's place.
struct RunPosition {
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t samples_in_epoch = 0;  // per rank
};

// Writes the run's checkpoint at `at` into --checkpoint-dir: rank 0 writes
// a whole-model file; under zero1-3 every rank writes its shard
// (collective). Nothing without --checkpoint-dir. Throws CheckpointError
// naming the file when a write fails.
void save_checkpoint(const TrainerOptions& o, Strategy& strategy, Communicator& comm,
                     const RunPosition& at);

}  // namespace tandem::train
