#include "tandem/detect/detection_loss.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/Reduction.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/binary_cross_entropy_with_logits.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>

#include "tandem/core/check.h"
#include "tandem/detect/box_ops.h"

namespace tandem::detect {

at::Tensor distribution_focal_loss(const at::Tensor& pred, const at::Tensor& target) {
  TANDEM_CHECK(pred.dim() == 2 && target.dim() == 1 && pred.size(0) == target.size(0),
               "distribution_focal_loss: expects pred [n, bins] and target [n], got [{}] and [{}]",
               fmt::join(pred.sizes(), ", "), fmt::join(target.sizes(), ", "));
  auto tl = target.to(at::kLong);
  auto tr = tl + 1;
  auto wl = tr.to(target.scalar_type()) - target;
  auto wr = 1 - wl;
  auto logp = pred.log_softmax(1);
  auto ce_l = -logp.gather(1, tl.unsqueeze(1)).squeeze(1);
  auto ce_r = -logp.gather(1, tr.clamp_max(pred.size(1) - 1).unsqueeze(1)).squeeze(1);
  return ce_l * wl + ce_r * wr;
}

at::Tensor pad_targets(const at::Tensor& targets, int64_t batch_size, double width, double height) {
  TANDEM_CHECK(targets.dim() == 2 && targets.size(1) == 6,
               "detection loss: targets must be [N, 6] (batch_idx, class, x, y, w, h), got [{}]",
               fmt::join(targets.sizes(), ", "));
  auto idx = targets.select(1, 0).to(at::kLong).to(at::kCPU);
  std::vector<int64_t> counts(batch_size, 0);
  const int64_t* ip = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i) {
    TANDEM_CHECK(ip[i] >= 0 && ip[i] < batch_size,
                 "detection loss: target {} names image {} of a batch of {}", i, ip[i], batch_size);
    ++counts[ip[i]];
  }
  const int64_t m = counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end());
  auto out = at::zeros({batch_size, m, 5}, targets.options());
  if (m == 0) return out;
  auto scale = at::tensor({width, height, width, height}, targets.options());
  auto boxes = xywh_to_xyxy(targets.narrow(1, 2, 4) * scale);
  std::vector<int64_t> fill(batch_size, 0);
  for (int64_t i = 0; i < idx.numel(); ++i) {
    auto row = out[ip[i]][fill[ip[i]]++];
    row.narrow(0, 0, 1).copy_(targets[i].narrow(0, 1, 1));
    row.narrow(0, 1, 4).copy_(boxes[i]);
  }
  return out;
}

DetectionLoss::DetectionLoss(int64_t num_classes, int64_t reg_max, std::vector<double> strides,
                             LossGains gains, AssignerOptions assigner)
    : num_classes_(num_classes),
      reg_max_(reg_max),
      strides_(std::move(strides)),
      gains_(gains),
      assigner_(num_classes, assigner) {
  TANDEM_CHECK(reg_max >= 2, "DetectionLoss: reg_max must be at least 2, got {}", reg_max);
}

DetectionLossResult DetectionLoss::operator()(
    const std::vector<at::Tensor>& raw, const at::Tensor& targets,
    const std::function<at::Tensor(const at::Tensor&)>& score_sum) const {
  TANDEM_CHECK(raw.size() == strides_.size(), "DetectionLoss: {} levels but {} strides", raw.size(),
               strides_.size());
  const int64_t b = raw[0].size(0), no = 4 * reg_max_ + num_classes_;
  std::vector<at::Tensor> flat;
  for (const auto& r : raw) {
    TANDEM_CHECK(r.dim() == 4 && r.size(1) == no,
                 "DetectionLoss: a level is [{}]; expected [B, {}, H, W] ({} classes, reg_max {})",
                 fmt::join(r.sizes(), ", "), no, num_classes_, reg_max_);
    flat.push_back(r.view({b, no, -1}));
  }
  auto pred = at::cat(flat, 2);
  auto pred_distri = pred.narrow(1, 0, 4 * reg_max_).permute({0, 2, 1}).contiguous();
  auto pred_scores = pred.narrow(1, 4 * reg_max_, num_classes_).permute({0, 2, 1}).contiguous();
  const int64_t a = pred.size(2);
  const double height = raw[0].size(2) * strides_[0], width = raw[0].size(3) * strides_[0];
  auto [anchor_points, stride_tensor] = make_anchors(raw, strides_, 0.5);

  auto gt = pad_targets(targets.to(pred.scalar_type()), b, width, height);
  auto gt_labels = gt.narrow(2, 0, 1), gt_bboxes = gt.narrow(2, 1, 4);
  auto mask_gt = (gt_bboxes.sum(2, /*keepdim=*/true) > 0).to(pred.scalar_type());

  auto dist =
      (pred_distri.view({b, a, 4, reg_max_}).softmax(3) * at::arange(reg_max_, pred.options()))
          .sum(3);
  auto pred_bboxes = dist2bbox(dist, anchor_points, /*xywh=*/false);  // in cells
  Assignment t =
      assigner_.assign(pred_scores.detach().sigmoid(), pred_bboxes.detach() * stride_tensor,
                       anchor_points * stride_tensor, gt_labels, gt_bboxes, mask_gt);
  auto scores = t.target_scores.sum().detach();
  auto target_scores_sum = (score_sum ? score_sum(scores) : scores).clamp_min(1);
  auto loss_cls = at::binary_cross_entropy_with_logits(pred_scores, t.target_scores, {}, {},
                                                       at::Reduction::Sum) /
                  target_scores_sum;
  auto loss_box = at::zeros({}, pred.options()), loss_dfl = at::zeros({}, pred.options());
  auto fg = t.fg_mask.flatten().nonzero().squeeze(1);
  if (fg.numel() > 0) {
    auto target_bboxes = t.target_bboxes / stride_tensor;
    auto weight = t.target_scores.sum(-1).flatten().index_select(0, fg).unsqueeze(-1);  // [F, 1]
    auto pb = pred_bboxes.reshape({-1, 4}).index_select(0, fg);
    auto tb = target_bboxes.reshape({-1, 4}).index_select(0, fg);
    auto iou = bbox_iou(pb, tb, /*ciou=*/true).unsqueeze(-1);
    loss_box = ((1.0 - iou) * weight).sum() / target_scores_sum;
    auto ltrb = bbox2dist(anchor_points, target_bboxes, static_cast<double>(reg_max_ - 1))
                    .reshape({-1, 4})
                    .index_select(0, fg);  // [F, 4]
    auto pd = pred_distri.reshape({-1, 4 * reg_max_}).index_select(0, fg).reshape({-1, reg_max_});
    auto dfl = distribution_focal_loss(pd, ltrb.reshape({-1})).view({-1, 4}).mean(-1, true);
    loss_dfl = (dfl * weight).sum() / target_scores_sum;
  }
  auto items = at::stack({loss_box * gains_.box, loss_cls * gains_.cls, loss_dfl * gains_.dfl});
  return {items.sum() * static_cast<double>(b), items.detach()};
}

}  // namespace tandem::detect
