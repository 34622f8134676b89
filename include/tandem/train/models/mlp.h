// A multi-layer perceptron classifier: Linear layers with ReLU between them
// (none after the last). The input is flattened from dimension 1, so both
// [B, 784] and [B, 1, 28, 28] MNIST batches work. Not thread-safe (like any
// torch::nn::Module): one thread runs forward/backward at a time.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

namespace tandem::train {

struct MlpOptions {
  // Features per sample after flattening; 784 = 28x28 MNIST.
  int64_t input_size = 784;
  // Width of each hidden layer, in order; may be empty (a linear classifier).
  std::vector<int64_t> hidden_sizes = {256, 256};
  // Number of output logits.
  int64_t classes = 10;
};

class MlpImpl : public torch::nn::Module {
 public:
  // Throws tandem::InvalidArgument if a size is not positive.
  explicit MlpImpl(MlpOptions options = {});

  // [B, ...] with input_size elements per sample -> logits [B, classes].
  // Throws tandem::InvalidArgument on another per-sample size.
  at::Tensor forward(const at::Tensor& input);

  const MlpOptions& options() const { return options_; }

 private:
  MlpOptions options_;
  std::vector<torch::nn::Linear> layers_;
};
TORCH_MODULE(Mlp);

// Number of parameters of an MLP with these options (weights and biases).
int64_t mlp_parameter_count(const MlpOptions& options);

}  // namespace tandem::train
