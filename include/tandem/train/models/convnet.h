// A small convolutional classifier for MNIST (28x28x1) or CIFAR (32x32x3)
// images: one stage per entry of ConvNetOptions::channels, each
// conv3x3 -> norm -> ReLU -> 2x2 max-pool, then a linear head over the
// flattened features. The norm layers come from ConvNetOptions::norm
// (BatchNorm2d by default; see norm_layer.h) so SyncBatchNorm can replace
// them. Not thread-safe (like any torch::nn::Module).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "tandem/train/models/norm_layer.h"

namespace tandem::train {

struct ConvNetOptions {
  // Channels of the input image: 1 for MNIST, 3 for CIFAR.
  int64_t in_channels = 1;
  // Height and width of the (square) input image; each stage halves it
  // (rounding down), and it must stay at least 1.
  int64_t image_size = 28;
  // Output channels of each conv-norm-ReLU-pool stage; 1 to 4 stages.
  std::vector<int64_t> channels = {32, 64};
  // Number of output logits.
  int64_t classes = 10;
  // Builds each norm layer; empty = torch::nn::BatchNorm2d.
  NormFactory norm = nullptr;
};

class ConvNetImpl : public torch::nn::Module {
 public:
  // Throws tandem::InvalidArgument on a non-positive size, no stage or too
  // many stages for image_size.
  explicit ConvNetImpl(ConvNetOptions options = {});

  // [B, in_channels, image_size, image_size] float -> logits [B, classes].
  // Throws tandem::InvalidArgument on another shape.
  at::Tensor forward(const at::Tensor& input);

  // The norm layers, one per stage, registered as "norm0", "norm1", ...
  const std::vector<torch::nn::AnyModule>& norms() const { return norms_; }
  const ConvNetOptions& options() const { return options_; }

 private:
  ConvNetOptions options_;
  std::vector<torch::nn::Conv2d> convs_;
  std::vector<torch::nn::AnyModule> norms_;
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(ConvNet);

}  // namespace tandem::train
