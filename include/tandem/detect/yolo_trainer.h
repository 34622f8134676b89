// The detection training loop, as Ultralytics' DetectionTrainer runs it:
// YoloSchedule's SGD, warmup, accumulation to the nominal batch and LR
// decay; gradient clipping; an EMA of the weights (ModelEma) that is
// validated and saved; mosaic switched off for the last close_mosaic
// epochs; a checkpoint per epoch (weights/last.ckpt, and best.ckpt by
// fitness); results.csv and args.yaml in the run folder; rank 0's progress.
//
// Data parallel over `comm` (one rank per device): the global batch of
// args.batch images is split evenly, every rank walks the same global order
// (seeded per epoch) and takes its contiguous slice of each global batch;
// DistributedDataParallel averages the gradients, and each rank's loss is
// normalised by the whole global batch's target scores and scaled so that
// the averaged gradient equals one process's on the whole batch.
// args.sync_bn builds the model with SyncBatchNorm. Validation is sharded
// (yolo_validator.h). Each rank's batches are prepared ahead by
// loader_workers(args.workers, ranks) threads (detection_loader.h), with
// the same result for any number of them.
// Collective: every rank calls train_yolo with the same arguments. Not
// thread-safe.
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/detect/detection_metrics.h"
#include "tandem/detect/train_args.h"

namespace tandem::detect {

struct TrainResult {
  std::string save_dir;     // the run folder
  int64_t epochs_done = 0;  // epochs completed, resumed ones included
  MetricsSummary metrics;   // the last validation
  double fitness = 0;       // of the last validation
  double best_fitness = 0;
  std::string last, best;  // the checkpoints' paths
  // False only in a rank that Yolo::train re-launched (See Note [Re-launch]
  // in yolo.h): the process to report or continue from is the one the user
  // started.
  bool main_process = true;
  // Files the data sets skipped (path, reason): train then val.
  std::vector<std::pair<std::string, std::string>> skipped;
};

// Collective. Trains as described above and writes the run folder
// `save_dir` (rank 0 only writes). `resume_from`: a checkpoint to continue
// (args must be those of its run; see Yolo::train); empty starts afresh.
// `out` gets rank 0's progress (null: silent). Throws
// tandem::InvalidArgument for bad args or data (validate()), CheckpointError
// for a checkpoint that does not fit, and whatever the communicator throws
// when a rank fails.
TrainResult train_yolo(const TrainArgs& args, const std::string& save_dir,
                       const std::shared_ptr<Communicator>& comm, std::ostream* out,
                       const std::string& resume_from = "");

}  // namespace tandem::detect
