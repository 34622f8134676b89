// The YOLOv8 detection loss (Ultralytics' v8DetectionLoss): the
// TaskAlignedAssigner picks targets for every anchor, then
//   box: (1 - CIoU) weighted by each anchor's target score,
//   dfl: distribution focal loss on the four side distances (reg_max bins),
//   cls: binary cross-entropy against the alignment-scaled one-hot targets,
// each divided by the sum of target scores (at least 1), scaled by its gain
// (box 7.5, cls 0.5, dfl 1.5) and summed, times the batch size.
// Thread-safe: no mutable state.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "tandem/detect/task_aligned_assigner.h"

namespace tandem::detect {

struct LossGains {
  double box = 7.5;
  double cls = 0.5;
  double dfl = 1.5;
};

struct DetectionLossResult {
  at::Tensor total;  // scalar: (box + cls + dfl) * batch size, with gradients
  at::Tensor items;  // [3] detached: box, cls, dfl (after gains, per image)
};

class DetectionLoss {
 public:
  DetectionLoss(int64_t num_classes, int64_t reg_max = 16,
                std::vector<double> strides = {8, 16, 32}, LossGains gains = {},
                AssignerOptions assigner = {});

  // raw: the head's outputs per level ([B, 4 * reg_max + C, H_i, W_i]);
  // targets [N, 6]: batch_idx, class, x, y, w, h normalised to the input
  // (collate()'s layout). Throws tandem::InvalidArgument for other shapes.
  // `score_sum`, when set, maps this batch's sum of target scores (a
  // detached scalar) to the normaliser to divide by: data-parallel training
  // passes the sum over every rank's batch (an all-reduce, so the call is
  // then collective), which makes the ranks' losses add up to the loss of
  // the whole global batch.
  DetectionLossResult operator()(
      const std::vector<at::Tensor>& raw, const at::Tensor& targets,
      const std::function<at::Tensor(const at::Tensor&)>& score_sum = {}) const;

 private:
  int64_t num_classes_, reg_max_;
  std::vector<double> strides_;
  LossGains gains_;
  TaskAlignedAssigner assigner_;
};

// Distribution focal loss: pred [n, reg_max] logits of one side's bins,
// target [n] continuous distances in [0, reg_max - 1): cross-entropy to the
// two bins around the target, weighted by closeness. Returns [n].
at::Tensor distribution_focal_loss(const at::Tensor& pred, const at::Tensor& target);

// targets [N, 6] (batch_idx, class, xywh normalised) -> [B, M, 5] (class,
// xyxy in pixels of an input of width x height), padded with zeros to M, the
// most boxes of any image.
at::Tensor pad_targets(const at::Tensor& targets, int64_t batch_size, double width, double height);

}  // namespace tandem::detect
