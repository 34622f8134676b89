// Autograd plumbing shared by the strategies that act on gradients as
// backward produces them (DDP, ZeRO-2, FSDP).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <utility>
#include <vector>

namespace tandem::parallel::detail {

// Calls on_ready(i) each time autograd has accumulated a gradient into
// params[i].grad() (after its AccumulateGrad node runs), from the thread
// running backward. The hooks live as long as this object. Not copyable.
class GradReadyHooks {
 public:
  GradReadyHooks(const std::vector<at::Tensor>& params, std::function<void(size_t)> on_ready);
  ~GradReadyHooks();
  GradReadyHooks(const GradReadyHooks&) = delete;
  GradReadyHooks& operator=(const GradReadyHooks&) = delete;

 private:
  std::function<void(size_t)> on_ready_;
  std::vector<std::pair<std::shared_ptr<void>, uintptr_t>> hooks_;  // accumulator, key
};

// Runs `fn` once the current backward pass has finished (an autograd final
// callback). Call only from inside backward (e.g. from a GradReadyHooks
// callback); exceptions from `fn` propagate out of backward().
void at_end_of_backward(std::function<void()> fn);

}  // namespace tandem::parallel::detail
