#include "tandem/parallel/memory_accounting.h"

#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <fmt/format.h>

#include <algorithm>
#include <typeinfo>
#include <unordered_set>

#include "tandem/core/error.h"
#include "tandem/parallel/activation_tracker.h"

namespace tandem::parallel {

void MemoryAccounting::record(const ModelStateBytes& now, int64_t activations) {
  now_ = now;
  activations_now_ = activations;
  peak_.parameters = std::max(peak_.parameters, now.parameters);
  peak_.gradients = std::max(peak_.gradients, now.gradients);
  peak_.optimizer_state = std::max(peak_.optimizer_state, now.optimizer_state);
  peak_total_ = std::max(peak_total_, now.total());
  peak_activations_ = std::max(peak_activations_, activations);
  peak_with_activations_ = std::max(peak_with_activations_, now.total() + activations);
}

void MemoryAccounting::record(const ModelStateBytes& now, const StorageSet& model_state) {
  record(now, activation_bytes(model_state));
}

void MemoryAccounting::sample(const std::vector<at::Tensor>& parameters,
                              const std::vector<at::Tensor>& gradients,
                              const std::vector<at::Tensor>& optimizer_state) {
  StorageSet held;
  ModelStateBytes now;
  now.parameters = held.add(parameters);
  now.gradients = held.add(gradients);
  now.optimizer_state = held.add(optimizer_state);
  record(now, held);
}

void MemoryAccounting::reset_peak() {
  peak_ = now_;
  peak_total_ = now_.total();
  peak_activations_ = activations_now_;
  peak_with_activations_ = now_.total() + activations_now_;
}

int64_t StorageSet::add(const std::vector<at::Tensor>& tensors) {
  int64_t bytes = 0;
  for (const auto& t : tensors) {
    if (!t.defined() || !t.has_storage()) continue;
    const c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
    if (seen_.insert(impl).second) bytes += static_cast<int64_t>(impl->nbytes());
  }
  return bytes;
}

int64_t storage_bytes(const std::vector<at::Tensor>& tensors) { return StorageSet().add(tensors); }

std::vector<at::Tensor> gradients_of(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  return grads;
}

namespace {

void add_if(std::vector<std::pair<std::string, at::Tensor>>& out, const char* name,
            const at::Tensor& t) {
  if (t.defined()) out.emplace_back(name, t);
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> named_state_tensors(
    const torch::optim::OptimizerParamState& state) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  const torch::optim::OptimizerParamState* s = &state;
  if (auto* sgd = dynamic_cast<const torch::optim::SGDParamState*>(s)) {
    add_if(out, "momentum_buffer", sgd->momentum_buffer());
  } else if (auto* adam = dynamic_cast<const torch::optim::AdamParamState*>(s)) {
    add_if(out, "exp_avg", adam->exp_avg());
    add_if(out, "exp_avg_sq", adam->exp_avg_sq());
    add_if(out, "max_exp_avg_sq", adam->max_exp_avg_sq());
  } else if (auto* adamw = dynamic_cast<const torch::optim::AdamWParamState*>(s)) {
    add_if(out, "exp_avg", adamw->exp_avg());
    add_if(out, "exp_avg_sq", adamw->exp_avg_sq());
    add_if(out, "max_exp_avg_sq", adamw->max_exp_avg_sq());
  } else if (auto* adagrad = dynamic_cast<const torch::optim::AdagradParamState*>(s)) {
    add_if(out, "sum", adagrad->sum());
  } else if (auto* rms = dynamic_cast<const torch::optim::RMSpropParamState*>(s)) {
    add_if(out, "square_avg", rms->square_avg());
    add_if(out, "momentum_buffer", rms->momentum_buffer());
    add_if(out, "grad_avg", rms->grad_avg());
  } else {
    throw NotSupported(fmt::format(
        "optimizer_state_tensors: unknown optimizer state type {}; known: SGD, Adam, AdamW, "
        "Adagrad, RMSprop",
        typeid(*s).name()));
  }
  return out;
}

std::vector<at::Tensor> optimizer_state_tensors(const torch::optim::Optimizer& optimizer) {
  std::vector<at::Tensor> out;
  for (const auto& [key, state] : optimizer.state()) {
    for (auto& [name, t] : named_state_tensors(*state)) out.push_back(std::move(t));
  }
  return out;
}

}  // namespace tandem::parallel
