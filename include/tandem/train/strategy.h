// Strategy: the trainer's view of a parallel strategy, what `tandem train
// --strategy` selects (none, ddp, zero1, zero2, zero3, ps, easgd, gossip,
// local-sgd), usable on its own (the benchmarks do). Each one owns the
// optimizer (a sharded strategy steps only its shard; under ps and backup
// workers the servers step) and knows how its state goes into a checkpoint:
// whole-model files for none/ddp, one shard per rank for the ZeRO stages.
// Construction and step() are collective for the synchronous strategies
// (over the training ranks); ps, easgd and gossip talk point to point and
// never wait for a slow worker. The trainer's call order (zero_grad,
// forward, backward, clip, step, and finish after the last step) is the
// contract. Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/ordered_dict.h>

#include <map>
#include <memory>
#include <string>

#include "tandem/comm/communicator.h"
#include "tandem/core/trace.h"
#include "tandem/memory/memory_accounting.h"
#include "tandem/train/checkpoint.h"
#include "tandem/train/sharded_checkpoint.h"
#include "tandem/train/trainer.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace tandem::train {

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
  // While the returned guard lives, backward passes accumulate gradients
  // without communicating (DDP's and ZeRO's no_sync); the next backward
  // outside it averages the sums. Null where nothing is held back.
  virtual std::shared_ptr<void> accumulate_locally() { return nullptr; }
  // After a forward pass without backward (evaluation): release what the
  // forward gathered.
  virtual void end_forward_only() {}
  // The full parameters by name (collective for zero3, which gathers them).
  virtual torch::OrderedDict<std::string, at::Tensor> full_parameters();
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
    double wait_seconds = 0;                // in communication and waits
    std::map<int64_t, int64_t> staleness;   // see TrainSummary::staleness_histogram
    int64_t dropped_gradients = 0;
    double consensus_distance = -1;         // -1: not measured
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

 protected:
  std::shared_ptr<torch::nn::Module> module_;
};

// Builds the strategy named by o.strategy around `module` (collective for
// everything but none). `comm` holds every rank; `workers`, the training
// ranks (the same as comm unless servers_for(o) > 0; null means comm).
// Called on training ranks only. Throws InvalidArgument for an unknown
// strategy.
std::unique_ptr<Strategy> make_strategy(const TrainerOptions& o,
                                        const std::shared_ptr<torch::nn::Module>& module,
                                        const std::shared_ptr<Communicator>& comm,
                                        const std::shared_ptr<TraceRecorder>& trace,
                                        const std::shared_ptr<Communicator>& workers = nullptr);

// How many of the last ranks serve parameters under `o` (0 for strategies
// without servers).
int servers_for(const TrainerOptions& o);

// On a server rank: serves the parameters of `module` (built the same way
// as on the workers) until every worker is done; returns what it measured.
TrainSummary serve_parameters(const TrainerOptions& o,
                              const std::shared_ptr<torch::nn::Module>& module,
                              const std::shared_ptr<Communicator>& comm);

// The optimizer --optimizer names, over `params`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainerOptions& o,
                                                        std::vector<at::Tensor> params);
void set_lr(torch::optim::Optimizer& opt, double lr);

}  // namespace tandem::train
