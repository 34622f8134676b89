// TaskAlignedAssigner (TOOD; Ultralytics' ultralytics/utils/tal.py): picks,
// for every ground-truth box, the anchors whose predictions align best with
// it, measured by score^alpha * CIoU^beta, among the anchors whose centre
// lies inside the box; keeps the top-k; resolves anchors claimed by several
// boxes by the highest IoU; and returns per-anchor targets with class scores
// scaled by the normalised alignment. Thread-safe: no mutable state.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace tandem::detect {

struct AssignerOptions {
  int64_t topk = 10;   // candidate anchors per box
  double alpha = 0.5;  // weight of the class score in the alignment
  double beta = 6.0;   // weight of the IoU in the alignment
  double eps = 1e-9;
};

struct Assignment {
  at::Tensor target_labels;  // int64 [B, A]: class of the assigned box (0 for background)
  at::Tensor target_bboxes;  // [B, A, 4] xyxy, in the units of gt_bboxes
  at::Tensor target_scores;  // [B, A, C]: one-hot class x normalised alignment
  at::Tensor fg_mask;        // bool [B, A]: anchor assigned to a box
  at::Tensor target_gt_idx;  // int64 [B, A]: index of the assigned box in its image
};

class TaskAlignedAssigner {
 public:
  TaskAlignedAssigner(int64_t num_classes, AssignerOptions options = {});

  // pd_scores [B, A, C] (probabilities), pd_bboxes [B, A, 4] xyxy,
  // anchor_points [A, 2], gt_labels [B, M, 1], gt_bboxes [B, M, 4] xyxy,
  // mask_gt [B, M, 1] (1 for real boxes, 0 for padding). Without
  // gradients. Throws tandem::InvalidArgument for mismatched shapes.
  Assignment assign(const at::Tensor& pd_scores, const at::Tensor& pd_bboxes,
                    const at::Tensor& anchor_points, const at::Tensor& gt_labels,
                    const at::Tensor& gt_bboxes, const at::Tensor& mask_gt) const;

 private:
  int64_t num_classes_;
  AssignerOptions options_;
};

// [B, M, A]: 1 where anchor a's centre lies strictly inside box m.
at::Tensor select_candidates_in_gts(const at::Tensor& anchor_points, const at::Tensor& gt_bboxes,
                                    double eps = 1e-9);

}  // namespace tandem::detect
