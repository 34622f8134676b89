// Box arithmetic shared by the detector, its loss and its metrics, as in
// Ultralytics (ultralytics/utils/metrics.py bbox_iou, box_iou;
// ultralytics/utils/tal.py make_anchors, dist2bbox, bbox2dist).
// Boxes are the last dimension of 4: xyxy = (x1, y1, x2, y2) corners or
// xywh = (centre x, centre y, width, height). Thread-safe: pure functions.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

namespace tandem::detect {

at::Tensor xywh_to_xyxy(const at::Tensor& boxes);
at::Tensor xyxy_to_xywh(const at::Tensor& boxes);

// Pairwise IoU of xyxy boxes a [N, 4] and b [M, 4]: [N, M].
at::Tensor box_iou(const at::Tensor& a, const at::Tensor& b, double eps = 1e-7);

// Element-wise IoU of xyxy boxes a [..., 4] and b [..., 4] (broadcast),
// shape [...]. With `ciou`, the complete IoU: IoU - rho^2 / c^2 - alpha v,
// where rho is the distance between the centres, c the diagonal of the
// smallest enclosing box, v = 4 / pi^2 (atan(w2 / h2) - atan(w1 / h1))^2
// and alpha = v / (v - IoU + 1 + eps), held constant in backward. eps is
// added to the heights and the union as Ultralytics does.
at::Tensor bbox_iou(const at::Tensor& a, const at::Tensor& b, bool ciou = false, double eps = 1e-7);

// Anchor points at the centre of every cell of every level, in cells
// (x + offset, y + offset), and each point's stride: ([A, 2], [A, 1]), level
// by level, row-major. `feats` are [B, C, H, W] maps; strides[i] their stride.
std::pair<at::Tensor, at::Tensor> make_anchors(const std::vector<at::Tensor>& feats,
                                               const std::vector<double>& strides,
                                               double offset = 0.5);

// Distances (left, top, right, bottom) from anchor points to box sides ->
// boxes (xywh when `xywh`, else xyxy), along dimension `dim` of size 4.
at::Tensor dist2bbox(const at::Tensor& distance, const at::Tensor& anchor_points, bool xywh,
                     int64_t dim = -1);

// xyxy boxes -> distances (left, top, right, bottom) from the anchor points,
// clamped to [0, reg_max - 0.01] (reg_max: the largest bin, 15 for 16 bins).
at::Tensor bbox2dist(const at::Tensor& anchor_points, const at::Tensor& bbox, double reg_max);

}  // namespace tandem::detect
