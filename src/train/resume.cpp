#include "train/resume.h"

#include <fmt/format.h>
#include <torch/nn/module.h>

#include <algorithm>

#include "tandem/core/error.h"

namespace tandem::train {

std::map<std::string, std::string> run_meta(const TrainerOptions& o, int world) {
  std::map<std::string, std::string> meta = {{"model", std::string(name_of(o.model.kind))},
          {"data", o.data.source},
          {"dataset_size", std::to_string(o.data.synthetic_size)},
          {"global_batch", std::to_string(o.run.batch_size * world)},
          {"dtype", std::string(name_of(o.model.dtype))},
          {"optimizer", std::string(name_of(o.optimizer.kind))},
          {"strategy", std::string(name_of(o.strategy.kind))}};
  // An elastic run counts its sampler position in global samples, which no
  // world size changes.
  if (o.elastic.enabled) meta["position"] = "global";
  return meta;
}

namespace {

void check_meta(const Checkpoint& ckpt, const TrainerOptions& o, int world) {
  for (const auto& [key, value] : run_meta(o, world)) {
    std::string flag = key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    auto it = ckpt.meta.find(key);
    const std::string saved = it == ckpt.meta.end() ? "(none)" : it->second;
    if (saved != value && key == "global_batch") {
      throw_checkpoint_error(
          ckpt.path, key,
          fmt::format("the checkpoint was written with a global batch (--batch-size x ranks) of "
                      "{} but this run's is {} ({} x {}); keep the global batch",
                      saved, value, o.run.batch_size, world));
    }
    if (saved != value) {
      throw_checkpoint_error(ckpt.path, key,
                             fmt::format("the checkpoint was written with --{} {} but this run "
                                         "has --{} {}; resume with the same settings",
                                         flag, saved, flag, value));
    }
  }
  if (ckpt.seed != o.run.seed) {
    throw_checkpoint_error(
        ckpt.path, "seed",
        fmt::format("the checkpoint was written with --seed {} but this run has --seed {}; the "
                    "data order would change, resume with the same seed",
                    ckpt.seed, o.run.seed));
  }
}

}  // namespace

// A sharded checkpoint may be resumed at another world size with the same
// global batch: the sampler deals the epoch out with stride world_size, so
// the samples of global step s are the same whatever the world size, and
// only the per-rank position changes.
void rescale_sampler_position(Checkpoint& ckpt, int saved_world, int world) {
  if (saved_world == world) return;
  auto position = ckpt.meta.find("position");
  if (position != ckpt.meta.end() && position->second == "global") {
    ckpt.world_size = world;
    return;
  }
  const int64_t consumed = ckpt.samples_in_epoch * saved_world;
  if (consumed % world != 0) {
    throw_checkpoint_error(
        ckpt.path, "samples_in_epoch",
        fmt::format("{} samples of the epoch were consumed by {} ranks, which {} ranks cannot "
                    "split evenly; keep --batch-size x ranks equal to the saved run's",
                    consumed, saved_world, world));
  }
  ckpt.samples_in_epoch = consumed / world;
  ckpt.world_size = world;
}

ResumePoint read_resume_point(const TrainerOptions& o, const std::string& path, int rank,
                              int world_size, std::optional<int> written_world) {
  const int meta_world = written_world.value_or(world_size);
  ResumePoint point;
  if (is_sharded_checkpoint(path)) {
    point.shards = read_sharded_checkpoint(path, rank, world_size);
    point.base = point.shards->base;
    point.base.path = path;
    check_meta(point.base, o, meta_world);
    rescale_sampler_position(point.base, point.shards->saved_world_size, world_size);
  } else {
    point.base = read_checkpoint(path);
    if (!written_world) check_world_size(point.base, world_size);
    check_meta(point.base, o, meta_world);
    rescale_sampler_position(point.base, point.base.world_size, world_size);
  }
  return point;
}

std::optional<ResumePoint> find_resume_point(const TrainerOptions& o, int rank, int world_size) {
  const CheckpointConfig& c = o.checkpoint;
  if (c.resume == ResumeMode::kOff) return std::nullopt;
  const std::optional<std::string> latest =
      c.resume == ResumeMode::kRequire ? latest_checkpoint(c.dir) : find_latest_checkpoint(c.dir);
  if (!latest) return std::nullopt;  // kIfPresent: nothing completed yet
  return read_resume_point(o, *latest, rank, world_size);
}

void restore(const ResumePoint& point, Strategy& strategy) {
  if (point.shards) {
    strategy.restore_sharded(*point.shards);
    restore_buffers(point.shards->base, *strategy.module());
  } else {
    strategy.restore(point.base);
  }
  restore_rng(point.base);
}

void save_checkpoint(const TrainerOptions& o, Strategy& strategy, Communicator& comm,
                     const RunPosition& at) {
  const bool sharded = strategy.sharded();
  if (o.checkpoint.dir.empty() || (comm.rank() != 0 && !sharded)) return;
  Checkpoint ck;
  ck.step = at.step;
  ck.epoch = at.epoch;
  ck.samples_in_epoch = at.samples_in_epoch;
  ck.seed = o.run.seed;
  ck.world_size = comm.size();
  ck.meta = run_meta(o, comm.size());
  capture_rng(ck);
  if (sharded) {
    for (const auto& item : strategy.module()->named_buffers(true)) {
      ck.buffers.emplace_back(item.key(), item.value().detach().clone());
    }
    write_sharded_checkpoint(o.checkpoint.dir, ck, strategy.sharded_state(), comm);
  } else {
    strategy.capture(ck);
    write_checkpoint(o.checkpoint.dir, ck);
  }
}

}  // namespace tandem::train
