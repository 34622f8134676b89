// Residual networks (He et al. 2015): ResNet-18 with basic blocks and
// ResNet-50 with bottleneck blocks (stride on the 3x3 conv, "v1.5", as in
// torchvision). Two stems: kCifar (3x3 conv, stride 1, no max-pool; for
// 32x32 images) and kImageNet (7x7 conv, stride 2, then 3x3 max-pool).
// Global average pooling makes the network accept any input size the strides
// leave at least 1x1; ResNetOptions::image_size only describes the expected
// input. Norm layers come from ResNetOptions::norm (BatchNorm2d by default)
// so SyncBatchNorm can replace them. Not thread-safe (like any Module).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <cstdint>
#include <vector>

#include "tandem/train/models/norm_layer.h"

namespace tandem::train {

enum class ResNetStem { kCifar, kImageNet };
enum class ResNetBlock { kBasic, kBottleneck };

struct ResNetOptions {
  // Number of output logits.
  int64_t classes = 10;
  // Channels of the input image.
  int64_t in_channels = 3;
  // Side of the square input image the model expects (used for synthetic
  // data and shape checks); at least 32 keeps every stage at least 1x1.
  int64_t image_size = 32;
  ResNetStem stem = ResNetStem::kCifar;
  // Builds each norm layer; empty = torch::nn::BatchNorm2d.
  NormFactory norm = nullptr;
};

// The depth-defining part of a ResNet: block type and blocks per stage.
struct ResNetLayout {
  ResNetBlock block = ResNetBlock::kBasic;
  std::array<int64_t, 4> blocks = {2, 2, 2, 2};
};

// ResNet-18: basic blocks {2, 2, 2, 2}. ResNet-50: bottlenecks {3, 4, 6, 3}.
ResNetLayout resnet18_layout();
ResNetLayout resnet50_layout();

// conv3x3 -> norm -> ReLU -> conv3x3 -> norm, plus the shortcut (identity, or
// conv1x1 -> norm when the stride or width changes), then ReLU.
class BasicBlockImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 1;
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride, const NormFactory& norm);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, shortcut_conv_{nullptr};
  torch::nn::AnyModule norm1_, norm2_, shortcut_norm_;
};
TORCH_MODULE(BasicBlock);

// conv1x1 -> norm -> ReLU -> conv3x3(stride) -> norm -> ReLU -> conv1x1
// (4x wider) -> norm, plus the shortcut, then ReLU.
class BottleneckImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride, const NormFactory& norm);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr}, shortcut_conv_{nullptr};
  torch::nn::AnyModule norm1_, norm2_, norm3_, shortcut_norm_;
};
TORCH_MODULE(Bottleneck);

class ResNetImpl : public torch::nn::Module {
 public:
  // Throws tandem::InvalidArgument on a non-positive size or block count.
  ResNetImpl(ResNetLayout layout, ResNetOptions options);

  // [B, in_channels, H, W] float -> logits [B, classes]. Throws
  // tandem::InvalidArgument on another rank or channel count.
  at::Tensor forward(const at::Tensor& input);

  const ResNetOptions& options() const { return options_; }

 private:
  ResNetOptions options_;
  torch::nn::Conv2d stem_conv_{nullptr};
  torch::nn::AnyModule stem_norm_;
  // One AnyModule per block (BasicBlock or Bottleneck), in order.
  std::vector<torch::nn::AnyModule> blocks_;
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(ResNet);

// ResNet-18 (11,173,962 parameters with the CIFAR stem and 10 classes).
ResNet make_resnet18(ResNetOptions options = {});
// ResNet-50 (25,557,032 parameters with the ImageNet stem and 1000 classes).
ResNet make_resnet50(ResNetOptions options = {});

}  // namespace tandem::train
