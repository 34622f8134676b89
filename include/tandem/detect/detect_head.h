// The decoupled, anchor-free detection head of YOLOv8 (Ultralytics'
// Detect): per level, a box branch predicting a distribution over reg_max
// bins for each of the four side distances (distribution focal loss), and a
// class branch predicting one logit per class. Strides are 8, 16 and 32.
// Not thread-safe (a torch module).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "tandem/train/models/norm_layer.h"

namespace tandem::detect {

class DetectHeadImpl : public torch::nn::Module {
 public:
  // `channels`: the input channels of each level (P3, P4, P5).
  DetectHeadImpl(int64_t num_classes, std::vector<int64_t> channels, int64_t reg_max = 16,
                 const train::NormFactory& norm = {});

  // Raw outputs per level: [B, 4 * reg_max + num_classes, H_i, W_i].
  std::vector<at::Tensor> forward(const std::vector<at::Tensor>& feats);

  // Decodes raw outputs to [B, 4 + num_classes, A]: boxes as xywh in input
  // pixels (the expectation of each side's distribution), then class
  // probabilities (sigmoid). A = sum of H_i * W_i.
  at::Tensor decode(const std::vector<at::Tensor>& raw) const;

  // Ultralytics' bias_init for an input of 640 pixels: box logits 1.0, class
  // logits log(5 / num_classes / (640 / stride)^2).
  void init_biases();

  int64_t num_classes() const { return num_classes_; }
  int64_t reg_max() const { return reg_max_; }
  const std::vector<double>& strides() const { return strides_; }

 private:
  int64_t num_classes_, reg_max_;
  std::vector<double> strides_ = {8, 16, 32};
  std::vector<torch::nn::Sequential> box_branches_, cls_branches_;
};
TORCH_MODULE(DetectHead);

// The expectation of each side's distribution: [B, 4 * reg_max, A] logits ->
// [B, 4, A] distances, in cells. softmax over the bins, weighted by 0..reg_max-1.
at::Tensor dfl_expectation(const at::Tensor& box_logits, int64_t reg_max);

}  // namespace tandem::detect
