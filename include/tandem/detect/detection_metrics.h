// Detection metrics: precision, recall, mAP@0.5 and mAP@0.5:0.95, per class
// and overall, over a whole validation set.
//
// Matching: in each image, at each IoU threshold 0.50, 0.55, ..., 0.95,
// pairs of (prediction, ground truth) of the same class with IoU >= the
// threshold are taken greedily by descending IoU, each box at most once; a
// matched prediction is a true positive at that threshold.
// AP: COCO's 101-point interpolation: the mean, over recall levels 0, 0.01,
// ..., 1, of the highest precision reached at that recall or above (0 when
// the recall is never reached). P and R are each class's precision and
// recall at the confidence where the mean F1 over classes (smoothed as
// Ultralytics does) is highest. Overall figures average over the classes
// that have ground truth, as Ultralytics does.
// Not thread-safe: one accumulator per validation loop; merge() combines the
// accumulators of several ranks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::detect {

// The ten IoU thresholds 0.50:0.05:0.95.
const std::vector<double>& iou_thresholds();

// COCO 101-point AP of a precision-recall curve (recall non-decreasing, by
// descending confidence).
double average_precision(const std::vector<double>& recall, const std::vector<double>& precision);

// Which predictions are true positives at each IoU threshold: bool [n, 10].
// pred_classes [n], true_classes [m], iou [m, n] (ground truth x prediction).
at::Tensor match_predictions(const at::Tensor& pred_classes, const at::Tensor& true_classes,
                             const at::Tensor& iou);

struct ClassMetrics {
  int64_t cls = 0;
  int64_t instances = 0;  // ground-truth boxes
  double precision = 0, recall = 0, ap50 = 0, ap50_95 = 0;
};

struct MetricsSummary {
  std::vector<ClassMetrics> classes;  // classes with ground truth, by class id
  double precision = 0, recall = 0, map50 = 0, map50_95 = 0;
  int64_t images = 0, instances = 0;
};

class DetectionMetrics {
 public:
  explicit DetectionMetrics(int64_t num_classes);

  // One image: detections [n, 6] (x1, y1, x2, y2, confidence, class) and its
  // ground truth, boxes [m, 4] xyxy in the same units and classes [m].
  // Throws tandem::InvalidArgument for other shapes.
  void update(const at::Tensor& detections, const at::Tensor& gt_boxes,
              const at::Tensor& gt_classes);

  // Adds another accumulator's statistics (e.g. gathered from another rank).
  void merge(const DetectionMetrics& other);

  // An accumulator holding raw statistics gathered from elsewhere (the
  // layouts of tp() .. target_cls()). Throws tandem::InvalidArgument when
  // the lengths disagree.
  static DetectionMetrics from_statistics(int64_t num_classes, const at::Tensor& tp,
                                          const at::Tensor& conf, const at::Tensor& pred_cls,
                                          const at::Tensor& target_cls, int64_t images);

  MetricsSummary compute() const;

  // The raw statistics, for gathering across ranks: tp bool [N, 10],
  // confidence [N], predicted class [N] and target classes [M], images.
  const at::Tensor& tp() const { return tp_; }
  const at::Tensor& conf() const { return conf_; }
  const at::Tensor& pred_cls() const { return pred_cls_; }
  const at::Tensor& target_cls() const { return target_cls_; }
  int64_t images() const { return images_; }

 private:
  int64_t num_classes_;
  at::Tensor tp_, conf_, pred_cls_, target_cls_;
  int64_t images_ = 0;
};

// The validation table as Ultralytics prints it: a header ("Class Images
// Instances Box(P R mAP50 mAP50-95)"), the "all" row and, with per_class, a
// row per class with ground truth, named from `names`.
std::string metrics_table(const MetricsSummary& s, const std::vector<std::string>& names,
                          bool per_class);

}  // namespace tandem::detect
