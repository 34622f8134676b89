// Virtual workers: the optimisation mathematics of N data-parallel workers
// in one process, placed in simulated time (`tandem lab converge`). Every
// worker has its own parameters, optimizer state and data shard, and takes
// its local steps in the trainer's order (set_lr, zero_grad, forward, loss,
// backward, clip, step); what the workers exchange goes through the update
// rules the real strategies use (tandem/parallel/async/update_rules.h), so
// the two cannot drift. When the workers' steps and messages happen comes
// from the simulator's cost model (sim::WorkerTimes: the profile, the
// cluster, its stragglers), so asynchrony and staleness emerge from the
// timing, as they would on that cluster:
//   kSync      synchronous data parallelism (ddp): the mean of the workers'
//              gradients, one step (the workers stay equal, so one copy of
//              the model stands for all; BatchNorm buffers are worker 0's,
//              as DDP broadcasts them; a model without buffers takes the
//              workers' batches in one forward, whose mean loss has the
//              mean of their gradients).
//   kPs        asynchronous SGD on a parameter server (optional staleness
//              bound): gradients applied in arrival order.
//   kEasgd     elastic averaging with the center every tau local steps.
//   kGossip    push-sum gossip (push, or pull) with one random peer a step.
//   kLocalSgd  a parameter average every sync_every local steps.
// Not thread-safe; nothing collective; LibTorch's global RNG is untouched
// except by the problem's own functions.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tandem/sim/worker_times.h"
#include "tandem/train/strategy.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace tandem::lab {

enum class VirtualStrategy { kSync, kPs, kEasgd, kGossip, kLocalSgd };

// "ddp" (kSync), "ps", "easgd", "gossip", "local-sgd"; InvalidArgument otherwise.
VirtualStrategy parse_virtual_strategy(const std::string& text);
std::string name_of(VirtualStrategy s);

// What the workers train. Every function must be deterministic.
struct VirtualProblem {
  // The model, with the same initial parameters on every call.
  std::function<std::shared_ptr<torch::nn::Module>()> make_model;
  std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<at::Tensor>)> make_optimizer;
  std::function<void(torch::optim::Optimizer&, double)> set_lr;
  // The `step`-th local batch of `worker` among `workers` (its data shard).
  std::function<train::Batch(int worker, int workers, int64_t step)> batch;
  // The training loss of `batch` on `model` (forward and loss, with
  // autograd): a mean over the batch's rows, so that the synchronous mode
  // may take the workers' batches in one forward.
  std::function<at::Tensor(torch::nn::Module& model, const train::Batch& batch)> loss;
  // The learning rate of local step `step`.
  std::function<double(int64_t step)> lr;
  // The loss that decides convergence, of the consensus model (no autograd).
  std::function<double(torch::nn::Module& model)> eval_loss;
  double clip_grad_norm = 0;  // 0: off
};

struct VirtualOptions {
  VirtualStrategy strategy = VirtualStrategy::kSync;
  int workers = 1;
  int64_t max_steps = 100;  // local steps per worker (kSync: global steps)
  // Evaluate the consensus model after every this many rounds; a round is
  // `workers` local steps (one global step under kSync).
  int64_t eval_every = 10;
  double target_loss = 0;  // > 0: stop at the first evaluation at or below it
  // Judge the target on worker 0's training loss, the mean of its last 10
  // local steps (what `tandem bench strategies` watches on rank 0), instead
  // of the evaluation loss.
  bool target_on_worker0 = false;
  int64_t staleness = -1;  // kPs: the stale-synchronous bound; -1: none
  int64_t tau = 1;         // kEasgd: local steps between exchanges
  double alpha = 0.1;      // kEasgd: the elastic coefficient
  bool gossip_pull = false;
  uint64_t seed = 0;       // kGossip: peer choice
  int64_t sync_every = 4;  // kLocalSgd
  // The cost model; null: a local step takes 1 s and messages are free.
  sim::WorkerTimes* times = nullptr;
};

struct VirtualPoint {
  double time_s = 0;
  int64_t rounds = 0;  // local steps over all workers / workers
  double loss = 0;
};

struct VirtualResult {
  bool reached = false;   // the target loss was reached
  double time_s = 0;      // simulated time to the target (or to the end)
  int64_t steps = 0;      // local steps over all workers (kSync: global steps x workers)
  int64_t samples = 0;    // samples those steps read
  double final_loss = 0;  // the last evaluation (or worker 0's mean loss that met the target)
  // kPs: clocks by which a gradient's parameters lagged the slowest worker
  // (as the real server reports); kEasgd: center updates between a
  // worker's exchanges. Count per value.
  std::map<int64_t, int64_t> staleness;
  std::vector<VirtualPoint> curve;
  // The consensus parameters at the end (the model's order).
  std::vector<at::Tensor> parameters;
};

// Throws InvalidArgument naming the option for bad options, and what the
// problem's functions throw.
VirtualResult run_virtual_workers(const VirtualProblem& problem, const VirtualOptions& options);

}  // namespace tandem::lab
