// The checkpoint of a detection run (weights/last.ckpt, best.ckpt): Tandem's
// checkpoint file format (train/checkpoint_file.h: magic, version,
// checksums, atomic writes) holding, as Ultralytics' last.pt does, the EMA
// weights as the model's parameters and buffers, the optimizer state, and in
// its meta the scale, the classes, the epochs completed, the best fitness,
// the EMA's update count and the run's args.yaml. Not collective; not
// thread-safe for two writers of one file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/detect/yolo_model.h"
#include "tandem/train/checkpoint_file.h"

namespace torch::optim {
class Optimizer;
}

namespace tandem::detect {

struct YoloCheckpointMeta {
  YoloScale scale = YoloScale::kN;
  std::vector<std::string> names;  // class names; their count is num_classes
  int64_t epochs_done = 0;         // completed epochs
  double best_fitness = 0;         // 0.1 mAP50 + 0.9 mAP50-95, the best so far
  int64_t ema_updates = 0;
  std::string args_yaml;  // TrainArgs (to_yaml)
};

struct YoloCheckpoint {
  YoloCheckpointMeta meta;
  train::Checkpoint file;  // parameters, buffers, optimizer_state as written
};

// Writes `model`'s parameters and buffers (as float32), `optimizer`'s state
// (none when null) and `meta` to `path` atomically. Throws CheckpointError
// naming the file.
void write_yolo_checkpoint(const std::string& path, const torch::nn::Module& model,
                           torch::optim::Optimizer* optimizer, const YoloCheckpointMeta& meta);

// Reads and verifies `path`. Throws CheckpointError naming the file and the
// field when it is not a detection checkpoint or is damaged.
YoloCheckpoint read_yolo_checkpoint(const std::string& path);

// Copies the checkpoint's weights into `model` (converted to its dtype).
// Throws CheckpointError naming the first tensor that does not fit.
void restore_yolo_weights(const YoloCheckpoint& ckpt, torch::nn::Module& model);

// A float32 model of the checkpoint's scale and classes holding its
// weights, in eval mode (for val and predict).
YoloModel load_yolo_model(const YoloCheckpoint& ckpt);

}  // namespace tandem::detect
