// Non-maximum suppression for the detector's decoded output, as Ultralytics'
// non_max_suppression does it for single-label boxes: drop candidates below
// a confidence, then greedily keep the highest-scoring box and remove every
// other box of the same class that overlaps it by more than an IoU
// threshold. A plain O(n^2) implementation (torchvision is not a
// dependency); candidates are capped before it runs. Thread-safe: pure.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace tandem::detect {

struct NmsOptions {
  double conf_threshold = 0.25;  // Ultralytics' predict default; validation uses 0.001
  double iou_threshold = 0.7;
  int64_t max_det = 300;           // boxes kept per image
  int64_t max_candidates = 30000;  // boxes entering NMS per image, by confidence
  bool agnostic = false;           // suppress across classes too
};

// Greedy NMS over boxes [N, 4] xyxy with scores [N]: the indices kept, by
// descending score. Boxes with IoU > iou_threshold to a kept box are dropped.
at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold);

// prediction [B, 4 + C, A] (DetectHead::decode: xywh in pixels, class
// probabilities) -> per image a [n, 6] tensor: x1, y1, x2, y2, confidence,
// class, by descending confidence. Throws tandem::InvalidArgument for a
// prediction of another shape or thresholds outside [0, 1].
std::vector<at::Tensor> non_max_suppression(const at::Tensor& prediction,
                                            const NmsOptions& options = {});

}  // namespace tandem::detect
