// ConfusionMatrix: which class the detector gave each object, as
// Ultralytics' ConfusionMatrix counts it for detection: per image, the
// detections above a confidence (0.25) are matched to the ground truth of
// any class by IoU above a threshold (0.45), best pairs first, each box at
// most once; then cell [predicted, true] counts a matched pair, [background,
// true] an object nothing matched, and [predicted, background] a detection
// that matched nothing. Row and column num_classes are the background.
// Not thread-safe: one per validation loop; merge() adds another's counts
// (e.g. another rank's, after an all-reduce of matrix()).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace tandem::detect {

class ConfusionMatrix {
 public:
  // Throws tandem::InvalidArgument for num_classes < 1 or thresholds outside [0, 1].
  explicit ConfusionMatrix(int64_t num_classes, double conf = 0.25, double iou = 0.45);

  // One image: detections [n, 6] (x1, y1, x2, y2, confidence, class) and its
  // ground truth, boxes [m, 4] xyxy in the same units and classes [m].
  void update(const at::Tensor& detections, const at::Tensor& gt_boxes,
              const at::Tensor& gt_classes);

  // int64 [num_classes + 1, num_classes + 1]: rows predicted, columns true.
  // Live state: collective code may all-reduce it in place.
  at::Tensor& matrix() { return matrix_; }
  const at::Tensor& matrix() const { return matrix_; }
  int64_t num_classes() const { return num_classes_; }

 private:
  int64_t num_classes_;
  double conf_, iou_;
  at::Tensor matrix_;
};

}  // namespace tandem::detect
