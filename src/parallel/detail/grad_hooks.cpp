#include "parallel/detail/grad_hooks.h"

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

namespace tandem::parallel::detail {
namespace {

class ReadyHook final : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(const std::function<void(size_t)>* on_ready, size_t index)
      : on_ready_(on_ready), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    (*on_ready_)(index_);
    return outputs;
  }

 private:
  const std::function<void(size_t)>* on_ready_;
  size_t index_;
};

}  // namespace

GradReadyHooks::GradReadyHooks(const std::vector<at::Tensor>& params,
                               std::function<void(size_t)> on_ready)
    : on_ready_(std::move(on_ready)) {
  for (size_t i = 0; i < params.size(); ++i) {
    // Holding the accumulator keeps it (and the hook) alive across iterations.
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(params[i]);
    uintptr_t key = acc->add_post_hook(std::make_unique<ReadyHook>(&on_ready_, i));
    hooks_.emplace_back(acc, key);
  }
}

GradReadyHooks::~GradReadyHooks() {
  for (auto& [acc, key] : hooks_)
    std::static_pointer_cast<torch::autograd::Node>(acc)->del_post_hook(key);
}

void at_end_of_backward(std::function<void()> fn) {
  torch::autograd::Engine::get_default_engine().queue_callback(std::move(fn));
}

}  // namespace tandem::parallel::detail
