// The training step the benchmarks run and time: a random batch shaped for a
// zoo model, forward + cross-entropy + backward, and the one timed loop that
// `bench ddp` and `bench fsdp` share (warm-up steps, a barrier, then the
// timed steps). Also the benches' small statistics. Thread-compatible.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/any.h>

#include <functional>
#include <string>
#include <vector>

#include "tandem/train/models/models.h"

namespace tandem {
class Communicator;
}

namespace tandem::bench {

struct Batch {
  at::Tensor input;
  at::Tensor target;
};

// `batch` random samples for `model` (token ids, or normal floats) and random
// targets in its classes. Throws InvalidArgument for an unknown model.
Batch random_batch(const std::string& model, const train::ModelOptions& options, int64_t batch);

// The forward pass of `model` on the batch and the backward of its
// cross-entropy loss.
void forward_backward(torch::nn::AnyModule& model, const Batch& batch);

struct StepLoop {
  int warmup = 3;                   // untimed steps first
  int steps = 10;                   // timed steps, >= 1
  std::function<void()> zero_grad;  // the optimizer's
  std::function<void()> step;
  Communicator* sync = nullptr;            // when set, a barrier starts the timed steps
  std::function<void()> after_timed_step;  // optional: read per-step statistics
};

// Runs loop.warmup + loop.steps training steps (zero_grad, forward_backward,
// step) on the same batch and returns the mean wall time of a timed step in
// seconds. Collective over loop.sync when it is set.
double time_steps(torch::nn::AnyModule& model, const Batch& batch, const StepLoop& loop);

// The median of `values`; an even count averages the middle two. `values`
// must not be empty.
double median(std::vector<double> values);

}  // namespace tandem::bench
