// Private to train/: the pieces of the training loop (trainer.cpp) that
// are not the loop itself: data sets, the batch as the model takes it, the
// loss and evaluation sums, the epoch cursor, rank 0's progress bar, the
// metrics file, a mean over ranks and the closing report lines.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/core/trace.h"
#include "tandem/memory/activation_tracker.h"
#include "tandem/memory/memory_accounting.h"
#include "tandem/train/data/dataset.h"
#include "tandem/train/data/distributed_sampler.h"
#include "tandem/train/models/models.h"
#include "tandem/train/losses.h"
#include "tandem/train/options.h"
#include "tandem/train/summary.h"

namespace tandem::train {

// The training set of --data and its test split (null for a path without one).
struct Datasets {
  std::unique_ptr<Dataset> train, test;
  const Dataset& eval() const { return test ? *test : *train; }
};
Datasets make_datasets(const TrainerOptions& o, const ModelInput& spec);

// --metrics FILE with {rank} expanded: JSON lines appended and flushed one
// at a time, so that `tail -f` shows each as it is written and a killed run
// keeps every line it wrote. Closed (writes nothing) for "".
class MetricsFile {
 public:
  // Throws InvalidArgument naming --metrics when the file cannot be opened.
  MetricsFile(const std::string& pattern, int rank);
  bool is_open() const { return out_.is_open(); }
  // Appends `line` and a newline, then flushes.
  void write(const nlohmann::json& line);

 private:
  std::ofstream out_;
};

// --trace-dir: a recorder for this rank (the directory created), or null.
std::shared_ptr<TraceRecorder> open_trace(const TrainerOptions& o, int rank);
// Writes DIR/rank-<r>.json and names it on `out` (if not null).
void write_trace(const TraceRecorder& trace, const TrainerOptions& o, int rank, std::ostream* out);

// The batch as the model wants it: the model's sample shape, its dtype.
at::Tensor model_input(const at::Tensor& input, const ModelInput& spec, const TrainerOptions& o);


// The run's optimizer steps: --steps, or --epochs of the sampler's shard
// (InvalidArgument when the shard holds less than one batch).
int64_t total_steps(const TrainerOptions& o, int64_t shard_size);

// Mean of `values` over the ranks (a collective).
std::vector<double> average_over_ranks(Communicator& comm, std::vector<double> values);

// The sampler's position as the loop walks it: batches of `batch` indices,
// moving to the next epoch when this one has less than a batch left.
// Where the loop reads its batches: this rank's shard (EpochCursor), or a
// slice of the global batch (GlobalCursor, elastic runs).
class BatchCursor {
 public:
  virtual ~BatchCursor() = default;
  // The next batch's indices (valid until the next call).
  virtual std::span<const int64_t> next() = 0;
  virtual int64_t epoch() const = 0;
  // Samples of the current epoch consumed (this rank's, or the global count).
  virtual int64_t samples_in_epoch() const = 0;
};

class EpochCursor final : public BatchCursor {
 public:
  EpochCursor(const SamplerOptions& options, int64_t batch);
  // Continues from a checkpoint's position: the sampler skips the samples of
  // `epoch` already consumed, so the loop sees the batches of a run that
  // never stopped. CheckpointError naming `path` when this rank's epoch
  // now holds fewer than `samples_in_epoch`.
  void resume_at(int64_t epoch, int64_t samples_in_epoch, const std::string& path);
  // The next batch's indices (valid until the next call).
  std::span<const int64_t> next() override;
  int64_t epoch() const override { return epoch_; }
  // Samples of the current epoch this rank consumed, the skipped ones included.
  int64_t samples_in_epoch() const override;
  // Samples per rank per epoch.
  int64_t shard_size() const { return sampler_.size(); }

 private:
  SamplerOptions options_;
  DistributedSampler sampler_;
  int64_t batch_;
  std::vector<int64_t> indices_;
  size_t cursor_ = 0;
  int64_t epoch_ = -1;
};

// Rank 0's progress: a redrawn bar on a terminal, a line per log step otherwise.
class Progress {
 public:
  Progress(std::ostream* out, int64_t total);
  void update(int64_t step, int64_t epoch, double loss, double samples_per_s, double eta_s);
  void done();

 private:
  std::ostream* out_;
  int64_t total_;
  bool tty_ = false;
};

// Fills s's model-state (and activation) bytes from what a strategy measured.
void record_memory(TrainSummary& s, const memory::MemoryAccounting& memory);
// An ActivationTracker armed on this thread under --track-activations, else null.
std::unique_ptr<memory::ActivationTracker> track_activations(const TrainerOptions& o);
// Rank 0's closing lines: "model state on rank 0 (WHAT): ..." and "summary: ...".
std::string memory_line(const TrainSummary& s, const std::string& what);
std::string summary_line(const TrainSummary& s);

}  // namespace tandem::train
