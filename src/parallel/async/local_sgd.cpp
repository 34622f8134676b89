#include "tandem/parallel/async/local_sgd.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/tensor.h>
#include <torch/nn/module.h>

#include <cmath>

#include "tandem/core/check.h"

namespace tandem::parallel {
namespace {

at::Tensor flat_double(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> parts;
  parts.reserve(tensors.size());
  for (const auto& t : tensors) parts.push_back(t.detach().reshape(-1).to(at::kDouble));
  return parts.empty() ? at::zeros({0}, at::kDouble) : at::cat(parts);
}

// Averages the floating-point tensors over the ranks as one flat float64
// vector (exact enough for rtol 1e-9 whatever the parameters' dtype) and
// returns this rank's distance from the average, measured before.
double average_in_place(Communicator& comm, const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> floating;
  for (const auto& t : tensors) {
    if (at::isFloatingType(t.scalar_type())) floating.push_back(t);
  }
  at::Tensor flat = flat_double(floating);
  at::Tensor mean = flat.clone();
  comm.all_reduce(mean, ReduceOp::kAvg);
  at::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& t : floating) {
    t.copy_(mean.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
  return (flat - mean).norm().item<double>();
}

}  // namespace

double consensus_distance(Communicator& comm, const std::vector<at::Tensor>& params,
                          double weight) {
  at::Tensor x = flat_double(params);
  at::Tensor sums = at::cat({x * weight, at::tensor({weight}, at::kDouble)});
  comm.all_reduce(sums);
  at::Tensor mean = sums.narrow(0, 0, x.numel()) / sums[x.numel()];
  at::Tensor d = at::tensor({(x - mean).norm().item<double>()}, at::kDouble);
  comm.all_reduce(d, ReduceOp::kAvg);
  return d.item<double>();
}

LocalSgd::LocalSgd(std::shared_ptr<torch::nn::Module> module, std::shared_ptr<Communicator> comm,
                   int64_t sync_every)
    : module_(std::move(module)), comm_(std::move(comm)), sync_every_(sync_every) {
  TANDEM_CHECK(module_ != nullptr && comm_ != nullptr, "LocalSgd: null module or communicator");
  TANDEM_CHECK(sync_every_ >= 1, "local SGD: --sync-every must be at least 1 (got {})",
               sync_every_);
  at::NoGradGuard no_grad;
  for (const auto& t : module_->parameters()) comm_->broadcast(t.detach(), 0);
  for (const auto& t : module_->buffers()) comm_->broadcast(t, 0);
}

bool LocalSgd::after_step() {
  if (++steps_ % sync_every_ != 0) return false;
  at::Tensor d = at::tensor({average_in_place(*comm_, module_->parameters())}, at::kDouble);
  average_in_place(*comm_, module_->buffers());
  comm_->all_reduce(d, ReduceOp::kAvg);
  last_distance_ = d.item<double>();
  ++averages_;
  return true;
}

}  // namespace tandem::parallel
