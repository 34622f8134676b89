// The synchronous data-parallel strategies behind --strategy none, ddp,
// zero1, zero2 and zero3 (Replicated, Zero, Fsdp), and make_strategy(),
// which picks one of them or an asynchronous one (async_strategies.h).
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>

#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"
#include "tandem/parallel/local_model.h"
#include "tandem/parallel/zero/zero_optimizer.h"
#include "tandem/train/strategy.h"
#include "train/async_strategies.h"

namespace tandem::train {

namespace {

parallel::GradCompression grad_compression(GradCompression c) {
  switch (c) {
    case GradCompression::kFp16:
      return parallel::GradCompression::kFp16;
    case GradCompression::kBf16:
      return parallel::GradCompression::kBf16;
    case GradCompression::kPowerSgd:
      return parallel::GradCompression::kPowerSgd;
    case GradCompression::kNone:
      break;
  }
  return parallel::GradCompression::kNone;
}

// none and ddp: every rank holds everything; a LibTorch optimizer over the
// module's parameters, and DDP averaging the gradients when there is one.
class Replicated final : public Strategy {
 public:
  Replicated(const TrainerOptions& o, std::shared_ptr<torch::nn::Module> module,
             const std::shared_ptr<Communicator>& comm, const std::shared_ptr<TraceRecorder>& trace)
      : Strategy(std::move(module)) {
    if (o.strategy.kind == StrategyKind::kDdp) {
      parallel::DdpOptions dd;
      dd.bucket_cap_mb = o.strategy.bucket_cap_mb;
      dd.compression = grad_compression(o.strategy.ddp.compression);
      dd.powersgd.matrix_approximation_rank = o.strategy.ddp.powersgd_rank;
      dd.powersgd.start_powersgd_iter = o.strategy.ddp.powersgd_start_iter;
      dd.powersgd.random_seed = o.run.seed;
      dd.gradient_as_bucket_view = true;  // gradients cost their bytes once
      dd.trace = trace;
      ddp_ = std::make_unique<parallel::DistributedDataParallel>(module_, comm, dd);
    }
    opt_ = make_optimizer(o, module_->parameters());
    // Memory samples as backward begins and after each step (DDP takes its own).
    if (!ddp_) local_ = std::make_unique<parallel::LocalModel>(module_, opt_.get());
  }
  void set_lr(double lr) override { train::set_lr(*opt_, lr); }
  void zero_grad() override { opt_->zero_grad(); }
  void clip_grad_norm(double max_norm) override {
    torch::nn::utils::clip_grad_norm_(module_->parameters(), max_norm);
  }
  void step() override {
    opt_->step();
    if (ddp_) {
      ddp_->sample_memory(opt_.get());
    } else {
      local_->sample_memory();
    }
  }
  std::shared_ptr<void> accumulate_locally() override {
    if (!ddp_) return nullptr;
    return std::make_shared<parallel::DistributedDataParallel::NoSyncGuard>(*ddp_);
  }
  int64_t gradient_bytes() const override { return ddp_ ? ddp_->last_stats().all_reduce_bytes : 0; }
  memory::MemoryAccounting memory() const override {
    return ddp_ ? ddp_->memory() : local_->memory();
  }
  void capture(Checkpoint& ckpt) override {
    capture_module(*module_, ckpt);
    capture_optimizer(*opt_, ckpt);
  }
  void restore(const Checkpoint& ckpt) override {
    restore_module(ckpt, *module_);
    restore_optimizer(ckpt, *opt_);
  }

 private:
  std::unique_ptr<parallel::DistributedDataParallel> ddp_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
  std::unique_ptr<parallel::LocalModel> local_;  // without DDP
};

// zero1 and zero2: ZeroRedundancyOptimizer; every rank holds the whole
// model, the optimizer state (and with zero2 the gradients) for its shard.
class Zero final : public Strategy {
 public:
  Zero(const TrainerOptions& o, const std::shared_ptr<torch::nn::Module>& module,
       const std::shared_ptr<Communicator>& comm, const std::shared_ptr<TraceRecorder>& trace)
      : Strategy(module), comm_(comm) {
    parallel::ZeroOptions zo;
    zo.stage = o.strategy.kind == StrategyKind::kZero1 ? 1 : 2;
    zo.bucket_cap_mb = o.strategy.bucket_cap_mb;
    zo.trace = trace;
    zero_ = std::make_unique<parallel::ZeroRedundancyOptimizer>(
        module, comm, [o](std::vector<at::Tensor> p) { return make_optimizer(o, std::move(p)); },
        zo);
  }
  void set_lr(double lr) override { train::set_lr(zero_->optimizer(), lr); }
  void zero_grad() override { zero_->zero_grad(); }
  void clip_grad_norm(double max_norm) override { zero_->clip_grad_norm(max_norm); }
  std::shared_ptr<void> accumulate_locally() override {
    return std::make_shared<parallel::ZeroRedundancyOptimizer::NoSyncGuard>(*zero_);
  }
  void step() override { zero_->step(); }
  memory::MemoryAccounting memory() const override { return zero_->memory(); }
  bool sharded() const override { return true; }
  ShardedState sharded_state() override {
    ShardedState s;
    for (size_t b = 0; b < zero_->bucket_count(); ++b) {
      ShardGroup g;
      g.layout = zero_->layouts()[b];
      for (const auto& e : g.layout.entries) g.names.push_back(zero_->parameter_names()[e.index]);
      g.params = zero_->parameter_shard(b);
      g.optimizer = optimizer_state_of(zero_->optimizer(), zero_->optimizer_pieces(b));
      s.groups.push_back(std::move(g));
    }
    return s;
  }
  // Collective: every rank holds all parameters, so the shards are gathered.
  void restore_sharded(const LoadedShards& loaded) override {
    check_same_layout(loaded, sharded_state(), loaded.base.path);
    at::NoGradGuard no_grad;
    for (size_t b = 0; b < zero_->bucket_count(); ++b) {
      const ShardGroup& g = loaded.state.groups[b];
      comm_->all_gather(zero_->flat_parameters(b), g.params.contiguous());
      set_optimizer_state(zero_->optimizer(), zero_->optimizer_pieces(b), g.optimizer);
    }
  }

 private:
  std::shared_ptr<Communicator> comm_;
  std::unique_ptr<parallel::ZeroRedundancyOptimizer> zero_;
};

// --wrap-policy as FSDP takes it; auto picks the zoo model's repeated block.
parallel::FsdpWrapPolicy wrap_policy(const TrainerOptions& o) {
  const WrapPolicy& w = o.strategy.zero.wrap;
  parallel::FsdpWrapPolicy p;
  if (!w.automatic) {
    p.module_types = w.module_types;
    p.min_num_params = w.min_num_params;
    p.module_names = w.module_names;
    return p;
  }
  switch (o.model.kind) {
    case ModelKind::kGptMini:
      p.module_types = {"GptBlockImpl"};
      break;
    case ModelKind::kResNet18:
      p.module_types = {"BasicBlockImpl"};
      break;
    case ModelKind::kResNet50:
      p.module_types = {"BottleneckImpl"};
      break;
    case ModelKind::kMlp:
    case ModelKind::kConvNet:
      p.module_types = {"torch::nn::LinearImpl"};
      break;
  }
  return p;
}

// zero3: FullyShardedDataParallel; each rank holds 1/N of everything plus
// the units gathered at the moment.
class Fsdp final : public Strategy {
 public:
  Fsdp(const TrainerOptions& o, const std::shared_ptr<torch::nn::Module>& module,
       const std::shared_ptr<Communicator>& comm, const std::shared_ptr<TraceRecorder>& trace)
      : Strategy(module) {
    parallel::FsdpOptions fo;
    fo.wrap = wrap_policy(o);
    fo.trace = trace;
    fsdp_ = std::make_unique<parallel::FullyShardedDataParallel>(module, comm, fo);
    opt_ = make_optimizer(o, fsdp_->parameters());
    fsdp_->account_optimizer(opt_.get());
  }
  ~Fsdp() override { fsdp_->account_optimizer(nullptr); }
  void set_lr(double lr) override { train::set_lr(*opt_, lr); }
  void zero_grad() override { opt_->zero_grad(); }
  void clip_grad_norm(double max_norm) override { fsdp_->clip_grad_norm(max_norm); }
  void step() override {
    opt_->step();
    fsdp_->account_optimizer(opt_.get());  // samples the state the step created
  }
  void end_forward_only() override { fsdp_->reshard(); }
  torch::OrderedDict<std::string, at::Tensor> full_parameters() override {
    return fsdp_->full_state_dict();
  }
  memory::MemoryAccounting memory() const override { return fsdp_->memory(); }
  bool sharded() const override { return true; }
  ShardedState sharded_state() override {
    ShardedState s;
    const auto shards = fsdp_->parameters();
    for (size_t u = 0; u < fsdp_->units().size(); ++u) {
      const auto& unit = fsdp_->units()[u];
      ShardGroup g;
      g.layout = unit.layout;
      for (const auto& e : g.layout.entries) g.names.push_back(unit.parameter_names[e.index]);
      g.params = fsdp_->shard(u);
      g.optimizer = optimizer_state_of(*opt_, shards[u]);
      s.groups.push_back(std::move(g));
    }
    return s;
  }
  void restore_sharded(const LoadedShards& loaded) override {
    check_same_layout(loaded, sharded_state(), loaded.base.path);
    const auto shards = fsdp_->parameters();
    for (size_t u = 0; u < fsdp_->units().size(); ++u) {
      fsdp_->load_shard(u, loaded.state.groups[u].params);
      set_optimizer_state(*opt_, shards[u], loaded.state.groups[u].optimizer);
    }
  }

 private:
  std::unique_ptr<parallel::FullyShardedDataParallel> fsdp_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
};

}  // namespace

std::unique_ptr<Strategy> make_strategy(const TrainerOptions& o,
                                        const std::shared_ptr<torch::nn::Module>& module,
                                        const std::shared_ptr<Communicator>& comm,
                                        const std::shared_ptr<TraceRecorder>& trace,
                                        const std::shared_ptr<Communicator>& workers) {
  if (is_asynchronous(o)) return make_async_strategy(o, module, comm, workers ? workers : comm);
  switch (o.strategy.kind) {
    case StrategyKind::kNone:
    case StrategyKind::kDdp:
      return std::make_unique<Replicated>(o, module, comm, trace);
    case StrategyKind::kZero1:
    case StrategyKind::kZero2:
      return std::make_unique<Zero>(o, module, comm, trace);
    case StrategyKind::kZero3:
      return std::make_unique<Fsdp>(o, module, comm, trace);
    case StrategyKind::kPs:
    case StrategyKind::kEasgd:
    case StrategyKind::kGossip:
    case StrategyKind::kLocalSgd:
      break;  // asynchronous, above
  }
  throw InternalError(
      fmt::format("make_strategy: --strategy {} reached no strategy", name_of(o.strategy.kind)));
}

}  // namespace tandem::train
