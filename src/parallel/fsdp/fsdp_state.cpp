// FullyShardedDataParallel: full and sharded state, gradient clipping and
// memory accounting. Construction is in fully_sharded_data_parallel.cpp, the
// gather/reduce machinery in fsdp_gather.cpp and fsdp_gradients.cpp.
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>

#include <cmath>

#include "parallel/fsdp/storage_touch_observer.h"
#include "parallel/fsdp/unit.h"
#include "tandem/core/check.h"
#include "tandem/memory/storage_set.h"
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"
#include "tandem/parallel/optimizer_state.h"

namespace tandem::parallel {

using detail::StorageTouchObserver;

double FullyShardedDataParallel::clip_grad_norm(double max_norm) {
  TANDEM_CHECK(max_norm > 0,
               "FullyShardedDataParallel::clip_grad_norm: max_norm must be positive "
               "(got {})",
               max_norm);
  rethrow_failure();
  at::NoGradGuard no_grad;
  at::Tensor sum = at::zeros({1}, at::kDouble);
  for (const auto& unit : state_) {
    const at::Tensor& g = unit->shard.grad();
    if (g.defined() && g.numel() > 0) sum += g.to(at::kDouble).pow(2).sum();
  }
  comm_->all_reduce(sum, ReduceOp::kSum, options_.timeout);
  const double norm = std::sqrt(sum.item<double>());
  const double scale = max_norm / (norm + 1e-6);
  if (scale < 1.0) {
    for (const auto& unit : state_) {
      if (unit->shard.grad().defined()) unit->shard.mutable_grad().mul_(scale);
    }
  }
  return norm;
}

torch::OrderedDict<std::string, at::Tensor> FullyShardedDataParallel::full_state_dict() {
  rethrow_failure();
  TANDEM_CHECK(!in_backward_ && !current_,
               "FullyShardedDataParallel::full_state_dict: call it between iterations, not "
               "inside forward or backward");
  StorageTouchObserver::Pause pause;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> full(params_.size());
  for (size_t u = 0; u < units_.size(); ++u) {
    at::Tensor flat = at::empty({units_[u].layout.numel}, state_[u]->shard_data.options());
    comm_->all_gather(flat, state_[u]->shard_data, options_.timeout);
    std::vector<at::Tensor> views = entry_views(units_[u].layout, flat, state_[u]->params.size());
    for (size_t k = 0; k < views.size(); ++k) full[state_[u]->params[k]] = views[k];
  }
  torch::OrderedDict<std::string, at::Tensor> out;
  size_t i = 0;
  for (const auto& item : module_->named_parameters(/*recurse=*/true)) {
    if (i < names_.size() && item.key() == names_[i]) {
      out.insert(item.key(), full[i++]);
    } else {
      out.insert(item.key(), item.value().detach().clone());  // frozen: replicated
    }
  }
  return out;
}

namespace {

const at::Tensor& entry_of(const torch::OrderedDict<std::string, at::Tensor>& state,
                           const std::string& name, const at::Tensor& like) {
  const at::Tensor* t = state.find(name);
  TANDEM_CHECK(t != nullptr && t->defined(),
               "FullyShardedDataParallel::load_full_state_dict: no parameter '{}' in the state",
               name);
  TANDEM_CHECK(t->sizes() == like.sizes(),
               "FullyShardedDataParallel::load_full_state_dict: parameter '{}' is [{}] in the "
               "state but [{}] in the model",
               name, fmt::join(t->sizes(), ", "), fmt::join(like.sizes(), ", "));
  return *t;
}

}  // namespace

void FullyShardedDataParallel::load_full_state_dict(
    const torch::OrderedDict<std::string, at::Tensor>& state) {
  StorageTouchObserver::Pause pause;
  at::NoGradGuard no_grad;
  for (size_t u = 0; u < units_.size(); ++u) {
    std::vector<at::Tensor> tensors;
    for (size_t i : state_[u]->params) {
      tensors.push_back(entry_of(state, names_[i], params_[i]).to(params_[i].scalar_type()));
    }
    copy_range_out(units_[u].layout, tensors, units_[u].shard, state_[u]->shard_data);
  }
  for (const auto& item : module_->named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad()) continue;
    item.value().copy_(entry_of(state, item.key(), item.value()));
  }
}

const at::Tensor& FullyShardedDataParallel::shard(size_t unit) const {
  TANDEM_CHECK(unit < state_.size(), "FullyShardedDataParallel::shard: unit {} of {}", unit,
               state_.size());
  return state_[unit]->shard;
}

void FullyShardedDataParallel::load_shard(size_t unit, const at::Tensor& shard) {
  TANDEM_CHECK(unit < state_.size(), "FullyShardedDataParallel::load_shard: unit {} of {}", unit,
               state_.size());
  TANDEM_CHECK(shard.numel() == units_[unit].shard.numel,
               "FullyShardedDataParallel::load_shard: unit {} ('{}') has {} elements on rank {}, "
               "got {}",
               unit, units_[unit].module, units_[unit].shard.numel, comm_->rank(), shard.numel());
  at::NoGradGuard no_grad;
  state_[unit]->shard_data.copy_(shard.reshape({-1}));
}

void FullyShardedDataParallel::account_optimizer(const torch::optim::Optimizer* optimizer) {
  optimizer_ = optimizer;
  memory_.at(memory::MemoryPoint::kRequested);
}

// The module's parameters share the units' storages: left out of the
// activations, not counted again.
void FullyShardedDataParallel::collect_memory(memory::ModelStateTensors& held) const {
  for (const auto& unit : state_) {
    held.parameters.push_back(unit->shard);
    held.parameters.push_back(unit->full);
    held.gradients.push_back(unit->shard.grad());
    held.gradients.push_back(unit->grad_full);
  }
  held.parameters.insert(held.parameters.end(), params_.begin(), params_.end());
  if (optimizer_ != nullptr) held.optimizer_state = optimizer_state_tensors(*optimizer_);
}

}  // namespace tandem::parallel
