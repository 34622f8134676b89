#include "bench/training_steps.h"

#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <torch/nn/functional/loss.h>

#include <algorithm>
#include <chrono>

#include "tandem/comm/communicator.h"

namespace tandem::bench {

Batch random_batch(const std::string& model, const train::ModelOptions& options, int64_t batch) {
  const auto spec = train::input_spec(model, options);
  Batch b;
  b.input = spec.dtype == at::kLong
                ? at::randint(0, spec.token_range, spec.input_shape(batch), at::kLong)
                : at::randn(spec.input_shape(batch));
  b.target = at::randint(0, spec.classes, spec.target_batch_shape(batch), at::kLong);
  return b;
}

void forward_backward(torch::nn::AnyModule& model, const Batch& batch) {
  at::Tensor logits = model.forward(batch.input);
  torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                       batch.target.reshape({-1}))
      .backward();
}

double time_steps(torch::nn::AnyModule& model, const Batch& batch, const StepLoop& loop) {
  std::chrono::steady_clock::time_point start;
  for (int s = 0; s < loop.warmup + loop.steps; ++s) {
    if (s == loop.warmup) {
      if (loop.sync) loop.sync->barrier();
      start = std::chrono::steady_clock::now();
    }
    loop.zero_grad();
    forward_backward(model, batch);
    loop.step();
    if (s >= loop.warmup && loop.after_timed_step) loop.after_timed_step();
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
         loop.steps;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t h = values.size() / 2;
  return values.size() % 2 == 1 ? values[h] : (values[h - 1] + values[h]) / 2;
}

}  // namespace tandem::bench
