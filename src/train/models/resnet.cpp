#include "tandem/train/models/resnet.h"

#include <ATen/ops/max_pool2d.h>

#include <string>
#include <utility>

#include "tandem/core/check.h"

namespace tandem::train {
namespace {

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  // No conv bias: every conv is followed by a norm layer with its own shift.
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

// Registers `layer` under `name` and returns it.
torch::nn::AnyModule add_norm(torch::nn::Module& parent, const std::string& name,
                              const NormFactory& norm, int64_t features) {
  torch::nn::AnyModule layer = make_norm_layer(norm, features);
  parent.register_module(name, layer.ptr());
  return layer;
}

void check_options(const ResNetLayout& layout, const ResNetOptions& options) {
  TANDEM_CHECK(options.classes > 0, "ResNetOptions::classes must be positive, got {}",
               options.classes);
  TANDEM_CHECK(options.in_channels > 0, "ResNetOptions::in_channels must be positive, got {}",
               options.in_channels);
  TANDEM_CHECK(options.image_size >= 32,
               "ResNetOptions::image_size must be at least 32 (the strides need it), got {}",
               options.image_size);
  for (size_t i = 0; i < layout.blocks.size(); ++i) {
    TANDEM_CHECK(layout.blocks[i] > 0, "ResNetLayout::blocks[{}] must be positive, got {}", i,
                 layout.blocks[i]);
  }
}

}  // namespace

ResNetLayout resnet18_layout() { return {ResNetBlock::kBasic, {2, 2, 2, 2}}; }
ResNetLayout resnet50_layout() { return {ResNetBlock::kBottleneck, {3, 4, 6, 3}}; }

BasicBlockImpl::BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride,
                               const NormFactory& norm) {
  conv1_ = register_module("conv1", conv(in_planes, planes, 3, stride));
  norm1_ = add_norm(*this, "norm1", norm, planes);
  conv2_ = register_module("conv2", conv(planes, planes, 3, 1));
  norm2_ = add_norm(*this, "norm2", norm, planes);
  if (stride != 1 || in_planes != planes * kExpansion) {
    shortcut_conv_ =
        register_module("shortcut_conv", conv(in_planes, planes * kExpansion, 1, stride));
    shortcut_norm_ = add_norm(*this, "shortcut_norm", norm, planes * kExpansion);
  }
}

at::Tensor BasicBlockImpl::forward(const at::Tensor& x) {
  at::Tensor out = norm1_.forward(conv1_->forward(x)).relu();
  out = norm2_.forward(conv2_->forward(out));
  at::Tensor identity = shortcut_conv_ ? shortcut_norm_.forward(shortcut_conv_->forward(x)) : x;
  return (out + identity).relu();
}

BottleneckImpl::BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride,
                               const NormFactory& norm) {
  conv1_ = register_module("conv1", conv(in_planes, planes, 1, 1));
  norm1_ = add_norm(*this, "norm1", norm, planes);
  conv2_ = register_module("conv2", conv(planes, planes, 3, stride));
  norm2_ = add_norm(*this, "norm2", norm, planes);
  conv3_ = register_module("conv3", conv(planes, planes * kExpansion, 1, 1));
  norm3_ = add_norm(*this, "norm3", norm, planes * kExpansion);
  if (stride != 1 || in_planes != planes * kExpansion) {
    shortcut_conv_ =
        register_module("shortcut_conv", conv(in_planes, planes * kExpansion, 1, stride));
    shortcut_norm_ = add_norm(*this, "shortcut_norm", norm, planes * kExpansion);
  }
}

at::Tensor BottleneckImpl::forward(const at::Tensor& x) {
  at::Tensor out = norm1_.forward(conv1_->forward(x)).relu();
  out = norm2_.forward(conv2_->forward(out)).relu();
  out = norm3_.forward(conv3_->forward(out));
  at::Tensor identity = shortcut_conv_ ? shortcut_norm_.forward(shortcut_conv_->forward(x)) : x;
  return (out + identity).relu();
}

ResNetImpl::ResNetImpl(ResNetLayout layout, ResNetOptions options) : options_(std::move(options)) {
  check_options(layout, options_);
  const bool cifar = options_.stem == ResNetStem::kCifar;
  stem_conv_ =
      register_module("stem_conv", conv(options_.in_channels, 64, cifar ? 3 : 7, cifar ? 1 : 2));
  stem_norm_ = add_norm(*this, "stem_norm", options_.norm, 64);
  const bool basic = layout.block == ResNetBlock::kBasic;
  const int64_t expansion = basic ? BasicBlockImpl::kExpansion : BottleneckImpl::kExpansion;
  int64_t in_planes = 64;
  for (int64_t stage = 0; stage < 4; ++stage) {
    const int64_t planes = int64_t{64} << stage;
    for (int64_t b = 0; b < layout.blocks[stage]; ++b) {
      // The first block of stages 2-4 halves the resolution.
      const int64_t stride = (stage > 0 && b == 0) ? 2 : 1;
      torch::nn::AnyModule block =
          basic ? torch::nn::AnyModule(BasicBlock(in_planes, planes, stride, options_.norm))
                : torch::nn::AnyModule(Bottleneck(in_planes, planes, stride, options_.norm));
      register_module("layer" + std::to_string(stage + 1) + "_" + std::to_string(b), block.ptr());
      blocks_.push_back(std::move(block));
      in_planes = planes * expansion;
    }
  }
  head_ = register_module("head", torch::nn::Linear(in_planes, options_.classes));
}

at::Tensor ResNetImpl::forward(const at::Tensor& input) {
  TANDEM_CHECK(input.dim() == 4 && input.size(1) == options_.in_channels,
               "ResNet expects [batch, {}, height, width] images, got shape {}; set "
               "ResNetOptions::in_channels to match the data",
               options_.in_channels, fmt::join(input.sizes(), "x"));
  at::Tensor x = stem_norm_.forward(stem_conv_->forward(input)).relu();
  if (options_.stem == ResNetStem::kImageNet) x = at::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
  for (auto& block : blocks_) x = block.forward(x);
  // Global average pooling over height and width.
  return head_->forward(x.mean({2, 3}));
}

ResNet make_resnet18(ResNetOptions options) {
  return ResNet(resnet18_layout(), std::move(options));
}
ResNet make_resnet50(ResNetOptions options) {
  return ResNet(resnet50_layout(), std::move(options));
}

}  // namespace tandem::train
