#include "tandem/detect/detect_head.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <torch/nn/modules/conv.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "tandem/core/check.h"
#include "tandem/detect/box_ops.h"
#include "tandem/detect/yolo_blocks.h"

namespace tandem::detect {

DetectHeadImpl::DetectHeadImpl(int64_t num_classes, std::vector<int64_t> channels, int64_t reg_max,
                               const train::NormFactory& norm)
    : num_classes_(num_classes), reg_max_(reg_max) {
  TANDEM_CHECK(num_classes >= 1, "DetectHead: num_classes must be at least 1, got {}", num_classes);
  TANDEM_CHECK(channels.size() == strides_.size(),
               "DetectHead: expects {} levels (strides 8, 16, 32), got {}", strides_.size(),
               channels.size());
  TANDEM_CHECK(reg_max >= 2, "DetectHead: reg_max must be at least 2, got {}", reg_max);
  const int64_t c2 = std::max({int64_t{16}, channels[0] / 4, reg_max * 4});
  const int64_t c3 = std::max(channels[0], std::min(num_classes, int64_t{100}));
  for (size_t i = 0; i < channels.size(); ++i) {
    torch::nn::Sequential box(ConvBnAct(channels[i], c2, 3, 1, norm), ConvBnAct(c2, c2, 3, 1, norm),
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(c2, 4 * reg_max, 1)));
    torch::nn::Sequential cls(ConvBnAct(channels[i], c3, 3, 1, norm), ConvBnAct(c3, c3, 3, 1, norm),
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(c3, num_classes, 1)));
    box_branches_.push_back(register_module(fmt::format("cv2_{}", i), box));
    cls_branches_.push_back(register_module(fmt::format("cv3_{}", i), cls));
  }
  init_biases();
}

void DetectHeadImpl::init_biases() {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < strides_.size(); ++i) {
    auto box_conv = box_branches_[i]->ptr(2)->as<torch::nn::Conv2d>();
    auto cls_conv = cls_branches_[i]->ptr(2)->as<torch::nn::Conv2d>();
    box_conv->bias.fill_(1.0);
    const double cells = std::pow(640.0 / strides_[i], 2);
    cls_conv->bias.fill_(std::log(5.0 / static_cast<double>(num_classes_) / cells));
  }
}

std::vector<at::Tensor> DetectHeadImpl::forward(const std::vector<at::Tensor>& feats) {
  TANDEM_CHECK(feats.size() == box_branches_.size(), "DetectHead: expects {} levels, got {}",
               box_branches_.size(), feats.size());
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < feats.size(); ++i) {
    out.push_back(
        at::cat({box_branches_[i]->forward(feats[i]), cls_branches_[i]->forward(feats[i])}, 1));
  }
  return out;
}

at::Tensor dfl_expectation(const at::Tensor& box_logits, int64_t reg_max) {
  const int64_t b = box_logits.size(0), a = box_logits.size(2);
  TANDEM_CHECK(box_logits.size(1) == 4 * reg_max,
               "dfl_expectation: expects {} channels (4 x reg_max {}), got {}", 4 * reg_max,
               reg_max, box_logits.size(1));
  auto proj = at::arange(reg_max, box_logits.options()).view({1, 1, reg_max, 1});
  return (box_logits.view({b, 4, reg_max, a}).softmax(2) * proj).sum(2);
}

at::Tensor DetectHeadImpl::decode(const std::vector<at::Tensor>& raw) const {
  TANDEM_CHECK(raw.size() == strides_.size(), "DetectHead::decode: expects {} levels, got {}",
               strides_.size(), raw.size());
  const int64_t b = raw[0].size(0), no = 4 * reg_max_ + num_classes_;
  std::vector<at::Tensor> flat;
  for (const auto& r : raw) flat.push_back(r.view({b, no, -1}));
  auto x = at::cat(flat, 2);
  auto box = x.narrow(1, 0, 4 * reg_max_), cls = x.narrow(1, 4 * reg_max_, num_classes_);
  auto [anchors, stride_tensor] = make_anchors(raw, strides_, 0.5);
  auto dist = dfl_expectation(box, reg_max_);
  auto dbox = dist2bbox(dist, anchors.transpose(0, 1).unsqueeze(0), /*xywh=*/true, 1) *
              stride_tensor.transpose(0, 1);
  return at::cat({dbox, cls.sigmoid()}, 1);
}

}  // namespace tandem::detect
