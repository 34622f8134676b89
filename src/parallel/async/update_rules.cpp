#include "tandem/parallel/async/update_rules.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/zeros.h>
#include <torch/optim/optimizer.h>

#include "tandem/core/check.h"

namespace tandem::parallel {

void elastic_move(const at::Tensor& worker, const at::Tensor& center, double alpha,
                  const at::Tensor& move) {
  TANDEM_CHECK(alpha > 0 && alpha <= 1, "elastic averaging: alpha must lie in (0, 1] (got {})",
               alpha);
  at::NoGradGuard no_grad;
  move.copy_(worker);
  move.sub_(center).mul_(alpha);
}

double push_sum_merge(const std::vector<at::Tensor>& params, double weight,
                      const at::Tensor& theirs, double their_weight) {
  const double keep = weight / (weight + their_weight);
  at::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& p : params) {
    at::Tensor part = theirs.narrow(0, offset, p.numel()).view(p.sizes()).to(p.scalar_type());
    p.mul_(keep).add_(part, 1.0 - keep);
    offset += p.numel();
  }
  return weight + their_weight;
}

GossipPeers::GossipPeers(uint64_t seed, int rank)
    : rng_(seed * 1000003ULL + static_cast<uint64_t>(rank)) {}

int GossipPeers::pick(const std::vector<bool>& closed) {
  std::vector<int> open;
  for (size_t p = 0; p < closed.size(); ++p) {
    if (!closed[p]) open.push_back(static_cast<int>(p));
  }
  if (open.empty()) return -1;
  return open[std::uniform_int_distribution<size_t>(0, open.size() - 1)(rng_)];
}

at::Tensor flat_of(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> parts;
  for (const auto& p : params) parts.push_back(p.detach().reshape(-1));
  return at::cat(parts);
}

at::Tensor flat_gradients(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> parts;
  for (const auto& p : params) {
    parts.push_back(p.grad().defined() ? p.grad().reshape(-1)
                                       : at::zeros({p.numel()}, p.options()));
  }
  return at::cat(parts);
}

void copy_into(const at::Tensor& flat, const std::vector<at::Tensor>& params) {
  at::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& p : params) {
    at::Tensor t = p;
    t.copy_(flat.narrow(0, offset, p.numel()).view(p.sizes()));
    offset += p.numel();
  }
}

void server_step(torch::optim::Optimizer& optimizer, const at::Tensor& shard,
                 const at::Tensor& grad, double lr,
                 const std::function<void(torch::optim::Optimizer&, double)>& set_lr) {
  at::Tensor leaf = shard;
  leaf.mutable_grad() = grad.detach().clone();
  set_lr(optimizer, lr);
  optimizer.step();
}

}  // namespace tandem::parallel
