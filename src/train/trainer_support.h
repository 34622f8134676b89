// Private to train/: the pieces of the training loop that trainer.cpp and
// the mesh loop (mesh_trainer.cpp) share: data sets, the batch as the model
// takes it, the loss, rank 0's progress bar, metrics files and a mean over
// ranks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/core/trace.h"
#include "tandem/memory/activation_tracker.h"
#include "tandem/memory/memory_accounting.h"
#include "tandem/train/data/dataset.h"
#include "tandem/train/models/models.h"
#include "tandem/train/trainer.h"

namespace tandem::train {

// The training set of --data and its test split (null for a path without one).
struct Datasets {
  std::unique_ptr<Dataset> train, test;
  const Dataset& eval() const { return test ? *test : *train; }
};
Datasets make_datasets(const TrainerOptions& o, const ModelInput& spec);

// --metrics FILE with {rank} expanded, for appending; closed if none.
std::ofstream open_metrics(const TrainerOptions& o, int rank);

// --trace-dir: a recorder for this rank (the directory created), or null.
std::shared_ptr<TraceRecorder> open_trace(const TrainerOptions& o, int rank);
// Writes DIR/rank-<r>.json and names it on `out` (if not null).
void write_trace(const TraceRecorder& trace, const TrainerOptions& o, int rank,
                 std::ostream* out);

// The batch as the model wants it: the model's sample shape, its dtype.
at::Tensor model_input(const at::Tensor& input, const ModelInput& spec, const TrainerOptions& o);

// Mean cross-entropy of logits [..., classes] against int64 targets [...].
at::Tensor loss_of(const at::Tensor& logits, const at::Tensor& target);

// The run's optimizer steps: --steps, or --epochs of the sampler's shard
// (InvalidArgument when the shard holds less than one batch).
int64_t total_steps(const TrainerOptions& o, int64_t shard_size);

// Mean of `values` over the ranks (a collective).
std::vector<double> average_over_ranks(Communicator& comm, std::vector<double> values);

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
// An ActivationTracker armed on this thread under o.track_activations, else null.
std::unique_ptr<memory::ActivationTracker> track_activations(const TrainerOptions& o);
// Rank 0's closing lines: "model state on rank 0 (WHAT): ..." and "summary: ...".
std::string memory_line(const TrainSummary& s, const std::string& what);
std::string summary_line(const TrainSummary& s);

// train() under --mesh (mesh_model.h); o is validated.
TrainSummary train_on_mesh(const TrainerOptions& o, const std::shared_ptr<Communicator>& comm,
                           std::ostream* out);

}  // namespace tandem::train
