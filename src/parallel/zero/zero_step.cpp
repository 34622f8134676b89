// ZeroRedundancyOptimizer's step (the shard's optimizer step and the
// all-gathers), zero_grad and gradient clipping.
#include <ATen/ops/full.h>
#include <fmt/format.h>
#include <torch/optim/optimizer.h>

#include <chrono>
#include <cmath>

#include "parallel/zero/bucket.h"
#include "tandem/core/check.h"
#include "tandem/parallel/zero/zero_optimizer.h"

namespace tandem::parallel {

using detail::same_memory;

void ZeroRedundancyOptimizer::step() {
  const auto start = std::chrono::steady_clock::now();
  {
    at::NoGradGuard no_grad;
    optimizer_->step();
  }
  const auto stepped = std::chrono::steady_clock::now();
  // Each rank's input is its own slice of the output: every backend gathers
  // in place (see all_gather in communicator.h).
  std::vector<std::shared_ptr<Work>> works;
  std::vector<TraceRecorder::TimePoint> launched;
  for (auto& b : buckets_) {
    launched.push_back(std::chrono::steady_clock::now());
    works.push_back(comm_->all_gather_async(b.params, b.param_shard, options_.timeout));
  }
  for (size_t b = 0; b < works.size(); ++b) {
    works[b]->wait(wait_timeout());  // on a throw, each Work still ends by its deadline
    if (options_.trace) {
      options_.trace->span(fmt::format("all_gather bucket {}", b), "comm", launched[b],
                           works[b]->finished_at());
    }
  }
  const auto gathered = std::chrono::steady_clock::now();
  stats_.all_gather_seconds = std::chrono::duration<double>(gathered - stepped).count();
  if (options_.trace) {
    options_.trace->span("optimizer step (shard)", "compute", start, stepped);
    options_.trace->span("wait for all_gather", "compute", stepped, gathered);
  }
  memory_.at(memory::MemoryPoint::kOptimizerStepped);
}

void ZeroRedundancyOptimizer::zero_grad() {
  at::NoGradGuard no_grad;
  for (auto& b : buckets_) {
    if (options_.stage == 1) {
      b.grads.zero_();
    } else {
      b.grad_shard.zero_();
      b.shard_is_zero = true;
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& grad = params_[i].mutable_grad();
    if (options_.stage == 1) {
      if (!same_memory(grad, grad_views_[i])) grad = grad_views_[i];
    } else {
      grad.reset();
    }
  }
}

double ZeroRedundancyOptimizer::clip_grad_norm(double max_norm) {
  TANDEM_CHECK(max_norm > 0 && std::isfinite(max_norm),
               "ZeroRedundancyOptimizer::clip_grad_norm: max_norm must be positive and finite "
               "(got {})",
               max_norm);
  at::NoGradGuard no_grad;
  // Stage 1 holds the whole averaged gradient on every rank; stage 2 only its shards.
  double sum_sq = 0;
  for (const auto& b : buckets_) {
    const at::Tensor& g = options_.stage == 1 ? b.grads : b.grad_shard;
    if (g.numel() == 0) continue;
    const double n = g.norm().item<double>();
    sum_sq += n * n;
  }
  if (options_.stage == 2) {
    at::Tensor total = at::full({1}, sum_sq, at::kDouble);
    comm_->all_reduce(total, ReduceOp::kSum, options_.timeout);
    sum_sq = total.item<double>();
  }
  const double norm = std::sqrt(sum_sq);
  const double coef = max_norm / (norm + 1e-6);  // as torch::nn::utils::clip_grad_norm_
  if (coef < 1) {
    for (auto& b : buckets_) (options_.stage == 1 ? b.grads : b.grad_shard).mul_(coef);
  }
  return norm;
}

}  // namespace tandem::parallel
