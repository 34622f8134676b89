#include "tandem/train/strategy.h"

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <chrono>

#include "tandem/core/check.h"
#include "tandem/core/error.h"

namespace tandem::train {

torch::OrderedDict<std::string, at::Tensor> Strategy::full_parameters() {
  return module_->named_parameters(true);
}

uint64_t Strategy::state_digest() {
  return train::state_digest(full_parameters(), module_->named_buffers(true));
}

double Strategy::train_step(const Batch& batch, double lr, const StepContext& ctx) {
  using Clock = std::chrono::steady_clock;
  set_lr(lr);
  zero_grad();
  const int64_t rows = batch.input.size(0);
  const int64_t per_pass = ctx.micro_batch > 0 ? std::min(ctx.micro_batch, rows) : rows;
  const auto t0 = Clock::now();
  double total = 0;
  std::chrono::duration<double> slept{};
  Clock::time_point t1;
  for (int64_t first = 0; first < rows; first += per_pass) {
    const int64_t n = std::min(per_pass, rows - first);
    const bool last = first + n == rows;
    // All passes but the last keep their gradients local; the last one's
    // backward (with DDP, its buckets) reduces the sums.
    const auto hold = last ? nullptr : accumulate_locally();
    const bool whole = n == rows;
    at::Tensor loss = whole ? loss_of(ctx.forward(batch.input), batch.target)
                            : loss_of(ctx.forward(batch.input.narrow(0, first, n)),
                                      batch.target.narrow(0, first, n));
    const double weight = static_cast<double>(n) / static_cast<double>(rows);
    if (first == 0) {
      t1 = Clock::now();
      if (ctx.straggler) slept = ctx.straggler->before_backward();
    }
    const double scale = ctx.loss_scale * weight;
    // with DDP, the last pass includes the wait for the last buckets
    (scale == 1.0 ? loss : loss * scale).backward();
    total += loss.item<double>() * weight;
  }
  if (ctx.straggler) ctx.straggler->after_compute(Clock::now() - t0 - slept);
  const auto t2 = Clock::now();
  if (ctx.clip_grad_norm > 0) clip_grad_norm(ctx.clip_grad_norm);
  step();
  if (ctx.trace) {
    const auto t3 = Clock::now();
    ctx.trace->span("forward", "compute", t0, t1);
    ctx.trace->span("backward", "compute", t1, t2);
    ctx.trace->span("optimizer step", "compute", t2, t3);
  }
  return total;
}

EvalSums Strategy::evaluate(const Batch& batch, const StepContext& ctx) {
  at::NoGradGuard no_grad;
  module_->eval();
  const EvalSums sums = eval_sums(ctx.forward(batch.input), batch.target);
  module_->train();
  return sums;
}

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
  const OptimizerConfig& p = o.optimizer;
  switch (p.kind) {
    case OptimizerKind::kAdamW:
      return std::make_unique<torch::optim::AdamW>(
          std::move(params), torch::optim::AdamWOptions(p.lr).weight_decay(p.weight_decay));
    case OptimizerKind::kSgd:
      break;
  }
  return std::make_unique<torch::optim::SGD>(std::move(params), torch::optim::SGDOptions(p.lr)
                                                                    .momentum(p.momentum)
                                                                    .nesterov(p.nesterov)
                                                                    .weight_decay(p.weight_decay));
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) {
    if (auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(&group.options())) sgd->lr(lr);
    if (auto* adamw = dynamic_cast<torch::optim::AdamWOptions*>(&group.options())) adamw->lr(lr);
  }
}

}  // namespace tandem::train
