// The problem `tandem lab converge` gives its virtual workers: the model,
// data, optimizer and learning-rate schedule of `tandem train` with the same
// options, each worker reading its own shard (DistributedSampler rank w of
// N) as a rank of a real run would, and the evaluation split's loss as the
// convergence measure. Not thread-safe (the workers' data cursors).
#pragma once

#include <cstdint>

#include "lab/virtual_workers.h"
#include "tandem/train/options.h"

namespace tandem::lab {

// For `workers` virtual workers; evaluation over the first `eval_batches`
// batches of the test split (the train split when the data has none).
// Throws InvalidArgument as `tandem train` does for bad options or data.
VirtualProblem problem_from_options(const train::TrainerOptions& options, int workers,
                                    int64_t eval_batches);

}  // namespace tandem::lab
