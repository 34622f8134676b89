#include "tandem/parallel/local_model.h"

#include <torch/nn/module.h>

#include <vector>

#include "parallel/detail/grad_hooks.h"
#include "tandem/core/check.h"
#include "tandem/memory/storage_set.h"
#include "tandem/parallel/optimizer_state.h"

namespace tandem::parallel {

LocalModel::LocalModel(std::shared_ptr<torch::nn::Module> module,
                       const torch::optim::Optimizer* optimizer)
    : module_(std::move(module)), optimizer_(optimizer) {
  TANDEM_CHECK(module_ != nullptr, "LocalModel: the module is null");
  std::vector<at::Tensor> trainable;
  for (const auto& p : module_->parameters()) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  hooks_ = std::make_unique<detail::GradReadyHooks>(trainable, [this](size_t) { on_gradient(); });
}

LocalModel::~LocalModel() = default;

// One sample per backward, at its first gradient, when nearly every
// activation is alive; only under a tracker (MemoryProbe::samples), which is
// what the sample is for.
void LocalModel::on_gradient() {
  if (sampled_in_backward_ || !memory::MemoryProbe::samples(memory::MemoryPoint::kBackwardBegins)) {
    return;
  }
  sampled_in_backward_ = true;
  detail::at_end_of_backward([this] { sampled_in_backward_ = false; });
  memory_.at(memory::MemoryPoint::kBackwardBegins);
}

void LocalModel::sample_memory() { memory_.at(memory::MemoryPoint::kRequested); }

void LocalModel::collect_memory(memory::ModelStateTensors& held) const {
  held.parameters = module_->parameters();
  held.gradients = memory::gradients_of(held.parameters);
  if (optimizer_ != nullptr) held.optimizer_state = optimizer_state_tensors(*optimizer_);
}

}  // namespace tandem::parallel
