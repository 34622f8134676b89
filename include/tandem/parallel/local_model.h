// LocalModel: a module trained in this process alone with a plain LibTorch
// optimizer and no strategy (`tandem train --strategy none`, the baseline
// the strategies are measured against). It changes nothing in training; it
// reports the model state (the module's parameters, their .grad and the
// optimizer's state) through a memory::MemoryProbe as the strategies do: as
// each backward begins (a hook on the gradients, sampling only under an
// armed ActivationTracker) and when sample_memory() is called.
//
// Not thread-safe: run forward and backward on one thread, the one an
// ActivationTracker is armed on. Nothing here is collective.
#pragma once

#include <memory>

#include "tandem/memory/memory_probe.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace tandem::parallel {
namespace detail {
class GradReadyHooks;
}

class LocalModel {
 public:
  // Hooks the gradients of `module`'s trainable parameters. `optimizer`
  // (not owned; null: no optimizer state) must outlive this object. Throws
  // InvalidArgument for a null module.
  LocalModel(std::shared_ptr<torch::nn::Module> module, const torch::optim::Optimizer* optimizer);
  ~LocalModel();
  LocalModel(const LocalModel&) = delete;
  LocalModel& operator=(const LocalModel&) = delete;

  // Local. Records a sample now (e.g. after optimizer.step()). Throws
  // NotSupported for an optimizer whose state type optimizer_state.h does
  // not know.
  void sample_memory();
  // Model-state bytes: parameters, .grad and the optimizer's state (each
  // storage once), now and at peak; with activations where a tracker is armed.
  const memory::MemoryAccounting& memory() const { return memory_.accounting(); }

 private:
  void on_gradient();
  void collect_memory(memory::ModelStateTensors& held) const;

  std::shared_ptr<torch::nn::Module> module_;
  const torch::optim::Optimizer* optimizer_;
  bool sampled_in_backward_ = false;
  memory::MemoryProbe memory_{[this](memory::ModelStateTensors& held) { collect_memory(held); }};
  std::unique_ptr<detail::GradReadyHooks> hooks_;
};

}  // namespace tandem::parallel
