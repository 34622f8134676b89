#include "train/strategy.h"

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/parallel/distributed_data_parallel.h"

namespace tandem::train::detail {

void Strategy::capture(Checkpoint&) {
  throw InternalError("this strategy writes sharded checkpoints");
}
void Strategy::restore(const Checkpoint&) {
  throw InternalError("this strategy reads sharded checkpoints");
}
ShardedState Strategy::sharded_state() {
  throw InternalError("this strategy writes whole-model checkpoints");
}
void Strategy::restore_sharded(const LoadedShards&) {
  throw InternalError("this strategy reads whole-model checkpoints");
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainerOptions& o,
                                                        std::vector<at::Tensor> params) {
  if (o.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(
        std::move(params), torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  }
  return std::make_unique<torch::optim::SGD>(std::move(params), torch::optim::SGDOptions(o.lr)
                                                                    .momentum(o.momentum)
                                                                    .nesterov(o.nesterov)
                                                                    .weight_decay(o.weight_decay));
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) {
    if (auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(&group.options())) sgd->lr(lr);
    if (auto* adamw = dynamic_cast<torch::optim::AdamWOptions*>(&group.options())) adamw->lr(lr);
  }
}

namespace {

parallel::GradCompression grad_compression(const std::string& name) {
  if (name == "fp16") return parallel::GradCompression::kFp16;
  if (name == "bf16") return parallel::GradCompression::kBf16;
  if (name == "powersgd") return parallel::GradCompression::kPowerSgd;
  return parallel::GradCompression::kNone;  // validate() accepted nothing else
}

// none and ddp: every rank holds everything; a LibTorch optimizer over the
// module's parameters, and DDP averaging the gradients when there is one.
class Replicated final : public Strategy {
 public:
  Replicated(const TrainerOptions& o, std::shared_ptr<torch::nn::Module> module,
             const std::shared_ptr<Communicator>& comm, const std::shared_ptr<TraceRecorder>& trace)
      : module_(std::move(module)) {
    if (o.strategy == "ddp") {
      parallel::DdpOptions dd;
      dd.bucket_cap_mb = o.bucket_cap_mb;
      dd.compression = grad_compression(o.grad_compression);
      dd.powersgd.matrix_approximation_rank = o.powersgd_rank;
      dd.powersgd.start_powersgd_iter = o.powersgd_start_iter;
      dd.powersgd.random_seed = o.seed;
      dd.trace = trace;
      ddp_ = std::make_unique<parallel::DistributedDataParallel>(module_, comm, dd);
    }
    opt_ = make_optimizer(o, module_->parameters());
  }
  void set_lr(double lr) override { detail::set_lr(*opt_, lr); }
  void zero_grad() override { opt_->zero_grad(); }
  void clip_grad_norm(double max_norm) override {
    torch::nn::utils::clip_grad_norm_(module_->parameters(), max_norm);
  }
  void step() override {
    opt_->step();
    sample();
  }
  int64_t gradient_bytes() const override {
    return ddp_ ? ddp_->last_stats().all_reduce_bytes : 0;
  }
  parallel::MemoryAccounting memory() const override { return memory_; }
  void capture(Checkpoint& ckpt) override {
    capture_module(*module_, ckpt);
    capture_optimizer(*opt_, ckpt);
  }
  void restore(const Checkpoint& ckpt) override {
    restore_module(ckpt, *module_);
    restore_optimizer(ckpt, *opt_);
  }

 private:
  void sample() {
    auto params = module_->parameters();
    std::vector<at::Tensor> grads = parallel::gradients_of(params);
    memory_.record({parallel::storage_bytes(params), parallel::storage_bytes(grads),
                    parallel::storage_bytes(parallel::optimizer_state_tensors(*opt_))});
  }

  std::shared_ptr<torch::nn::Module> module_;
  std::unique_ptr<parallel::DistributedDataParallel> ddp_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
  parallel::MemoryAccounting memory_;
};

}  // namespace

std::unique_ptr<Strategy> make_strategy(const TrainerOptions& o,
                                        const std::shared_ptr<torch::nn::Module>& module,
                                        const std::shared_ptr<Communicator>& comm,
                                        const std::shared_ptr<TraceRecorder>& trace) {
  if (o.strategy == "none" || o.strategy == "ddp") {
    return std::make_unique<Replicated>(o, module, comm, trace);
  }
  throw InvalidArgument(fmt::format("--strategy {} is not one of none, ddp", o.strategy));
}

}  // namespace tandem::train::detail
