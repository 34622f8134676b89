#include "tandem/detect/task_aligned_assigner.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/one_hot.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include "tandem/core/check.h"
#include "tandem/detect/box_ops.h"

namespace tandem::detect {

at::Tensor select_candidates_in_gts(const at::Tensor& anchor_points, const at::Tensor& gt_bboxes,
                                    double eps) {
  const int64_t b = gt_bboxes.size(0), m = gt_bboxes.size(1), a = anchor_points.size(0);
  auto corners = gt_bboxes.view({-1, 1, 4}).chunk(2, 2);  // lt, rb: [B*M, 1, 2]
  auto points = anchor_points.unsqueeze(0);               // [1, A, 2]
  auto deltas = at::cat({points - corners[0], corners[1] - points}, 2).view({b, m, a, 4});
  return std::get<0>(deltas.min(3)).gt(eps).to(gt_bboxes.scalar_type());
}

TaskAlignedAssigner::TaskAlignedAssigner(int64_t num_classes, AssignerOptions options)
    : num_classes_(num_classes), options_(options) {
  TANDEM_CHECK(num_classes >= 1, "TaskAlignedAssigner: num_classes must be at least 1, got {}",
               num_classes);
  TANDEM_CHECK(options.topk >= 1, "TaskAlignedAssigner: topk must be at least 1, got {}",
               options.topk);
}

namespace {

// [B, M, A] with 1 at each box's top-k anchors by `metrics` (ties and
// padding boxes as Ultralytics' select_topk_candidates).
at::Tensor select_topk(const at::Tensor& metrics, int64_t topk, const at::Tensor& topk_mask) {
  const int64_t k = std::min(topk, metrics.size(2));
  auto [values, idxs] = metrics.topk(k, -1, /*largest=*/true);
  idxs = idxs.masked_fill(topk_mask.expand({-1, -1, k}).logical_not(), 0);
  auto count = at::zeros(metrics.sizes(), metrics.options().dtype(at::kChar));
  auto ones = at::ones_like(idxs.narrow(2, 0, 1), idxs.options().dtype(at::kChar));
  for (int64_t i = 0; i < k; ++i) count.scatter_add_(-1, idxs.narrow(2, i, 1), ones);
  // A padding box sends all k to anchor 0: more than one hit means none.
  count.masked_fill_(count > 1, 0);
  return count.to(metrics.scalar_type());
}

}  // namespace

Assignment TaskAlignedAssigner::assign(const at::Tensor& pd_scores, const at::Tensor& pd_bboxes,
                                       const at::Tensor& anchor_points, const at::Tensor& gt_labels,
                                       const at::Tensor& gt_bboxes,
                                       const at::Tensor& mask_gt) const {
  at::NoGradGuard no_grad;
  const int64_t b = pd_scores.size(0), a = pd_scores.size(1), m = gt_bboxes.size(1);
  TANDEM_CHECK(pd_scores.dim() == 3 && pd_scores.size(2) == num_classes_ &&
                   pd_bboxes.sizes() == at::IntArrayRef({b, a, 4}) &&
                   anchor_points.sizes() == at::IntArrayRef({a, 2}) &&
                   gt_labels.sizes() == at::IntArrayRef({b, m, 1}) &&
                   gt_bboxes.sizes() == at::IntArrayRef({b, m, 4}) &&
                   mask_gt.sizes() == at::IntArrayRef({b, m, 1}),
               "TaskAlignedAssigner: shapes do not match: scores [{}], boxes [{}], anchors [{}], "
               "gt labels [{}], gt boxes [{}], mask [{}] ({} classes)",
               fmt::join(pd_scores.sizes(), ", "), fmt::join(pd_bboxes.sizes(), ", "),
               fmt::join(anchor_points.sizes(), ", "), fmt::join(gt_labels.sizes(), ", "),
               fmt::join(gt_bboxes.sizes(), ", "), fmt::join(mask_gt.sizes(), ", "), num_classes_);
  Assignment out;
  if (m == 0) {
    out.target_labels = at::zeros({b, a}, pd_scores.options().dtype(at::kLong));
    out.target_bboxes = at::zeros_like(pd_bboxes);
    out.target_scores = at::zeros_like(pd_scores);
    out.fg_mask = at::zeros({b, a}, pd_scores.options().dtype(at::kBool));
    out.target_gt_idx = at::zeros({b, a}, pd_scores.options().dtype(at::kLong));
    return out;
  }
  // Alignment metric for every (box, anchor) whose anchor is inside the box.
  auto mask_in_gts = select_candidates_in_gts(anchor_points, gt_bboxes);
  auto valid = (mask_in_gts * mask_gt).to(at::kBool);                            // [B, M, A]
  auto labels = gt_labels.squeeze(-1).to(at::kLong).clamp(0, num_classes_ - 1);  // [B, M]
  // pd_scores[b, a, labels[b, m]] -> [B, M, A]
  auto bbox_scores = pd_scores.transpose(1, 2).gather(1, labels.unsqueeze(-1).expand({b, m, a}));
  auto ious = bbox_iou(gt_bboxes.unsqueeze(2), pd_bboxes.unsqueeze(1), /*ciou=*/true)
                  .clamp_min(0)
                  .to(pd_scores.scalar_type());
  auto overlaps = at::where(valid, ious, at::zeros_like(ious));
  bbox_scores = at::where(valid, bbox_scores, at::zeros_like(bbox_scores));
  auto align_metric = bbox_scores.pow(options_.alpha) * overlaps.pow(options_.beta);
  auto mask_topk = select_topk(align_metric, options_.topk, mask_gt.to(at::kBool));
  auto mask_pos = mask_topk * mask_in_gts * mask_gt;  // [B, M, A]

  // An anchor claimed by several boxes goes to the box it overlaps most.
  auto fg = mask_pos.sum(1);  // [B, A]
  if (fg.max().item<double>() > 1) {
    auto multi = (fg.unsqueeze(1) > 1).expand({-1, m, -1});
    auto best = overlaps.argmax(1);  // [B, A]
    auto is_best = at::zeros_like(mask_pos).scatter_(1, best.unsqueeze(1), 1);
    mask_pos = at::where(multi, is_best, mask_pos);
    fg = mask_pos.sum(1);
  }
  auto target_gt_idx = mask_pos.argmax(1);  // [B, A]
  out.fg_mask = fg > 0;

  // Targets of every anchor from its box.
  auto batch_offset = at::arange(b, target_gt_idx.options()).unsqueeze(1) * m;
  auto flat_idx = target_gt_idx + batch_offset;  // [B, A]
  out.target_labels = labels.flatten().index_select(0, flat_idx.flatten()).view({b, a});
  out.target_bboxes =
      gt_bboxes.reshape({-1, 4}).index_select(0, flat_idx.flatten()).view({b, a, 4});
  auto scores = at::one_hot(out.target_labels, num_classes_).to(pd_scores.scalar_type());
  scores = at::where(out.fg_mask.unsqueeze(-1), scores, at::zeros_like(scores));

  // Normalise: each box's best anchor gets the box's best IoU.
  align_metric = align_metric * mask_pos;
  auto pos_align = std::get<0>(align_metric.max(-1, /*keepdim=*/true));  // [B, M, 1]
  auto pos_overlaps = std::get<0>((overlaps * mask_pos).max(-1, /*keepdim=*/true));
  auto norm = std::get<0>((align_metric * pos_overlaps / (pos_align + options_.eps)).max(1))
                  .unsqueeze(-1);  // [B, A, 1]
  out.target_scores = scores * norm;
  out.target_gt_idx = target_gt_idx;
  return out;
}

}  // namespace tandem::detect
