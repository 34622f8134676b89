// Strategy: the trainer's view of a parallel strategy, what `tandem train
// --strategy` selects (none, ddp, zero1, zero2, zero3, ps, easgd, gossip,
// local-sgd) and what a mesh run trains through (MeshModel, mesh_model.h),
// usable on its own (the benchmarks do). Each one owns the optimizer (a
// sharded strategy steps only its shard; under ps and backup workers the
// servers step) and knows how its state goes into a checkpoint: whole-model
// files for none/ddp, one shard per rank for the ZeRO stages.
//
// The training loop (trainer.h) calls train_step() once per step and
// evaluate() per evaluation batch; the default train_step is the call order
// zero_grad, forward, backward, clip, step, which a caller driving the
// finer calls itself must keep too (and finish() after the last step).
// Construction and step() are collective for the synchronous strategies
// (over the training ranks); ps, easgd and gossip talk point to point and
// never wait for a slow worker. Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/ordered_dict.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/core/trace.h"
#include "tandem/memory/memory_accounting.h"
#include "tandem/train/checkpoint.h"
#include "tandem/train/losses.h"
#include "tandem/train/options.h"
#include "tandem/train/sharded_checkpoint.h"
#include "tandem/train/straggler.h"
#include "tandem/train/summary.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace tandem::parallel {
struct ParameterServerState;
}

namespace tandem::train {

// One batch as the model takes it.
struct Batch {
  at::Tensor input;
  at::Tensor target;  // int64 class ids (next tokens for gpt-mini)
};

// What the loop hands every step besides the batch.
struct StepContext {
  // The whole model's forward: logits of a batch's input. Unused by
  // strategies that run their own model (MeshModel).
  std::function<at::Tensor(const at::Tensor&)> forward;
  double clip_grad_norm = 0;  // 0: off
  // Multiplies the loss before backward (the returned loss is unscaled):
  // an elastic run's weight of an uneven slice of the global batch.
  double loss_scale = 1.0;
  // Rows per forward/backward pass; a larger batch runs in passes of this
  // many (the last may be smaller) whose gradients accumulate locally
  // (accumulate_locally()) until the last, so the step's result is that of
  // the whole batch. An elastic run sets --batch-size: a survivor's larger
  // share of the global batch then needs no more activation memory than
  // before. 0: the whole batch in one pass.
  int64_t micro_batch = 0;
  Straggler* straggler = nullptr;  // injected delays; null: none
  TraceRecorder* trace = nullptr;  // forward, backward and step spans; null: none
};

class Strategy {
 public:
  explicit Strategy(std::shared_ptr<torch::nn::Module> module) : module_(std::move(module)) {}
  virtual ~Strategy() = default;
  // Sets the learning rate of every parameter group.
  virtual void set_lr(double lr) = 0;
  virtual void zero_grad() = 0;
  // Collective where the gradients are sharded. Scales the gradients to a
  // global 2-norm of at most max_norm.
  virtual void clip_grad_norm(double max_norm) = 0;
  // Collective for the sharded strategies.
  virtual void step() = 0;

  // One optimizer step on `batch` at learning rate `lr`; returns the loss
  // (this rank's, unless reports_global_loss()). The default: set_lr,
  // zero_grad, ctx.forward and cross-entropy, ctx.straggler's sleeps around
  // backward, backward (in passes of ctx.micro_batch rows, the loss of each
  // weighted by its share of the rows), clip_grad_norm when
  // ctx.clip_grad_norm > 0, step,
  // and the spans "forward", "backward" and "optimizer step" on ctx.trace.
  // Collective where step() and backward are.
  virtual double train_step(const Batch& batch, double lr, const StepContext& ctx);
  // This rank's evaluation sums of `batch`, without gradients, in eval mode
  // (the caller reduces them over the data ranks). Call end_forward_only()
  // after the last batch. Collective where the forward is (zero3, a mesh).
  virtual EvalSums evaluate(const Batch& batch, const StepContext& ctx);
  // True when train_step() returns the global batch's loss, the same on
  // every rank, so that the log needs no collective (MeshModel).
  virtual bool reports_global_loss() const { return false; }

  // While the returned guard lives, backward passes accumulate gradients
  // without communicating (DDP's and ZeRO's no_sync); the next backward
  // outside it averages the sums. Null where nothing is held back.
  virtual std::shared_ptr<void> accumulate_locally() { return nullptr; }
  // After a forward pass without backward (evaluation): release what the
  // forward gathered.
  virtual void end_forward_only() {}
  // The full parameters by name (collective for zero3, which gathers them).
  virtual torch::OrderedDict<std::string, at::Tensor> full_parameters();
  // state_digest() (checkpoint.h) of the full parameters and the module's
  // buffers: equal on every rank under ddp. Collective where
  // full_parameters() is.
  virtual uint64_t state_digest();
  // Bytes handed to collectives for gradients in the last step (0 if none).
  virtual int64_t gradient_bytes() const { return 0; }
  // Model-state bytes this rank holds, measured (now and at peak).
  virtual memory::MemoryAccounting memory() const = 0;

  // False for strategies whose ranks do not meet every step (ps, easgd,
  // gossip, local-sgd, backup workers): the trainer then logs each rank's
  // own loss, with no collective.
  virtual bool synchronous() const { return true; }
  // True once the servers said the run is over (ddp with backup workers,
  // whose slow worker's steps do not count).
  virtual bool finished() const { return false; }
  // After the last step: say goodbye to servers or peers, measure the
  // consensus distance. Collective over the training ranks.
  virtual void finish() {}
  struct Stats {
    double wait_seconds = 0;               // in communication and waits
    std::map<int64_t, int64_t> staleness;  // see TrainSummary::staleness_histogram
    int64_t dropped_gradients = 0;
    double consensus_distance = -1;  // -1: not measured
  };
  virtual Stats stats() const { return {}; }

  // Whole-model checkpoints (none, ddp): rank 0 writes, every rank reads.
  virtual bool sharded() const { return false; }
  virtual void capture(Checkpoint& ckpt);
  virtual void restore(const Checkpoint& ckpt);
  // Sharded checkpoints (zero1-3): this rank's share, and the way back from
  // a checkpoint read for (rank, world size), resharded if need be.
  virtual ShardedState sharded_state();
  virtual void restore_sharded(const LoadedShards& loaded);

  // The module this rank trains (its buffers go into sharded checkpoints).
  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }

 protected:
  std::shared_ptr<torch::nn::Module> module_;
};

// Builds the strategy o.strategy.kind names around `module` (collective for
// everything but none). `comm` holds every rank; `workers`, the training
// ranks (the same as comm unless servers_for(o) > 0; null means comm).
// Called on training ranks only; `o` is validated (validate_options).
std::unique_ptr<Strategy> make_strategy(const TrainerOptions& o,
                                        const std::shared_ptr<torch::nn::Module>& module,
                                        const std::shared_ptr<Communicator>& comm,
                                        const std::shared_ptr<TraceRecorder>& trace,
                                        const std::shared_ptr<Communicator>& workers = nullptr);

// On a server rank: serves the parameters of `module` (built the same way
// as on the workers) until every worker is done; returns what it measured.
// InvalidArgument when servers_for(o) is 0. With `carry` (an elastic job's
// server between generations): starts from *carry when it holds a shard,
// and when serving fails stores the server's state there before rethrowing.
TrainSummary serve_parameters(const TrainerOptions& o,
                              const std::shared_ptr<torch::nn::Module>& module,
                              const std::shared_ptr<Communicator>& comm,
                              parallel::ParameterServerState* carry = nullptr);

// The optimizer o.optimizer.kind names, over `params`, at o.optimizer.lr.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainerOptions& o,
                                                        std::vector<at::Tensor> params);
void set_lr(torch::optim::Optimizer& opt, double lr);

}  // namespace tandem::train
