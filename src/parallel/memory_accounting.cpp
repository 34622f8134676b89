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

namespace tandem::parallel {

void MemoryAccounting::record(const ModelStateBytes& now) {
  now_ = now;
  peak_.parameters = std::max(peak_.parameters, now.parameters);
  peak_.gradients = std::max(peak_.gradients, now.gradients);
  peak_.optimizer_state = std::max(peak_.optimizer_state, now.optimizer_state);
  peak_total_ = std::max(peak_total_, now.total());
}

void MemoryAccounting::reset_peak() {
  peak_ = now_;
  peak_total_ = now_.total();
}

int64_t storage_bytes(const std::vector<at::Tensor>& tensors) {
  std::unordered_set<const void*> seen;
  int64_t bytes = 0;
  for (const auto& t : tensors) {
    if (!t.defined() || !t.has_storage()) continue;
    const c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
    if (seen.insert(impl).second) bytes += static_cast<int64_t>(impl->nbytes());
  }
  return bytes;
}

std::vector<at::Tensor> gradients_of(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  return grads;
}

namespace {

void add_if(std::vector<at::Tensor>& out, const at::Tensor& t) {
  if (t.defined()) out.push_back(t);
}

}  // namespace

std::vector<at::Tensor> optimizer_state_tensors(const torch::optim::Optimizer& optimizer) {
  std::vector<at::Tensor> out;
  for (const auto& [key, state] : optimizer.state()) {
    const torch::optim::OptimizerParamState* s = state.get();
    if (auto* sgd = dynamic_cast<const torch::optim::SGDParamState*>(s)) {
      add_if(out, sgd->momentum_buffer());
    } else if (auto* adam = dynamic_cast<const torch::optim::AdamParamState*>(s)) {
      add_if(out, adam->exp_avg());
      add_if(out, adam->exp_avg_sq());
      add_if(out, adam->max_exp_avg_sq());
    } else if (auto* adamw = dynamic_cast<const torch::optim::AdamWParamState*>(s)) {
      add_if(out, adamw->exp_avg());
      add_if(out, adamw->exp_avg_sq());
      add_if(out, adamw->max_exp_avg_sq());
    } else if (auto* adagrad = dynamic_cast<const torch::optim::AdagradParamState*>(s)) {
      add_if(out, adagrad->sum());
    } else if (auto* rms = dynamic_cast<const torch::optim::RMSpropParamState*>(s)) {
      add_if(out, rms->square_avg());
      add_if(out, rms->momentum_buffer());
      add_if(out, rms->grad_avg());
    } else {
      throw NotSupported(fmt::format(
          "optimizer_state_tensors: unknown optimizer state type {}; known: SGD, Adam, AdamW, "
          "Adagrad, RMSprop",
          typeid(*s).name()));
    }
  }
  return out;
}

}  // namespace tandem::parallel
