// RunFolder: the folder a detection run writes, laid out as Ultralytics'
// (runs/detect/train, train2, ...):
//   args.yaml      the run's TrainArgs
//   results.csv    one row per epoch (see kResultsHeader)
//   weights/       last.ckpt and best.ckpt
// Not thread-safe; only one process (rank 0) writes a run folder.
#pragma once

#include <string>
#include <vector>

namespace tandem::detect {

// The columns of results.csv, in order.
inline constexpr const char* kResultsHeader =
    "epoch,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision(B),"
    "metrics/recall(B),metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss,val/cls_loss,"
    "val/dfl_loss,lr/pg0,lr/pg1,lr/pg2";

// The folder of a new run: `project`/`name` when it does not exist (or when
// exist_ok), else the first of `name`2, `name`3, ... that does not. Does not
// create it.
std::string next_run_dir(const std::string& project, const std::string& name, bool exist_ok);

// The newest weights/last.ckpt under `project`/*/ (by modification time).
// Throws tandem::InvalidArgument naming `project` when there is none.
std::string newest_last_checkpoint(const std::string& project);

// DIR/weights/<name>.ckpt, the checkpoint `name` ("last", "best") of run DIR.
std::string checkpoint_path(const std::string& run_dir, const std::string& name);

// The run folder a checkpoint belongs to: DIR for DIR/weights/NAME.
std::string run_dir_of_checkpoint(const std::string& checkpoint);

class RunFolder {
 public:
  // Creates `dir` and dir/weights. Throws tandem::Error naming the folder
  // when it cannot be made.
  explicit RunFolder(std::string dir);

  const std::string& dir() const { return dir_; }
  std::string weights(const std::string& name) const { return checkpoint_path(dir_, name); }

  // Writes args.yaml (replacing it).
  void write_args(const std::string& yaml) const;

  // Appends one row to results.csv, writing the header first when the file
  // is new. Throws tandem::Error when the file cannot be written.
  void append_results(const std::vector<double>& row) const;

  // The rows of results.csv (the header skipped); empty when it is missing.
  std::vector<std::vector<double>> read_results() const;

 private:
  std::string dir_;
};

}  // namespace tandem::detect
