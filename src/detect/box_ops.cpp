#include "tandem/detect/box_ops.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/atan.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/meshgrid.h>
#include <ATen/ops/minimum.h>
#include <ATen/ops/stack.h>

#include <numbers>

#include "tandem/core/check.h"

namespace tandem::detect {

at::Tensor xywh_to_xyxy(const at::Tensor& b) {
  TANDEM_CHECK(b.size(-1) == 4, "xywh_to_xyxy: the last dimension must be 4, got {}", b.size(-1));
  auto xy = b.narrow(-1, 0, 2), half = b.narrow(-1, 2, 2) / 2;
  return at::cat({xy - half, xy + half}, -1);
}

at::Tensor xyxy_to_xywh(const at::Tensor& b) {
  TANDEM_CHECK(b.size(-1) == 4, "xyxy_to_xywh: the last dimension must be 4, got {}", b.size(-1));
  auto p1 = b.narrow(-1, 0, 2), p2 = b.narrow(-1, 2, 2);
  return at::cat({(p1 + p2) / 2, p2 - p1}, -1);
}

at::Tensor box_iou(const at::Tensor& a, const at::Tensor& b, double eps) {
  TANDEM_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == 4 && b.size(1) == 4,
               "box_iou: expects [N, 4] and [M, 4] boxes, got [{}] and [{}]",
               fmt::join(a.sizes(), ", "), fmt::join(b.sizes(), ", "));
  auto a1 = a.narrow(1, 0, 2).unsqueeze(1), a2 = a.narrow(1, 2, 2).unsqueeze(1);
  auto b1 = b.narrow(1, 0, 2).unsqueeze(0), b2 = b.narrow(1, 2, 2).unsqueeze(0);
  auto inter = (at::minimum(a2, b2) - at::maximum(a1, b1)).clamp_min(0).prod(2);
  auto area_a = (a2 - a1).prod(2), area_b = (b2 - b1).prod(2);
  return inter / (area_a + area_b - inter + eps);
}

at::Tensor bbox_iou(const at::Tensor& a, const at::Tensor& b, bool ciou, double eps) {
  TANDEM_CHECK(a.size(-1) == 4 && b.size(-1) == 4,
               "bbox_iou: boxes need a last dimension of 4, got [{}] and [{}]",
               fmt::join(a.sizes(), ", "), fmt::join(b.sizes(), ", "));
  auto ax1 = a.select(-1, 0), ay1 = a.select(-1, 1), ax2 = a.select(-1, 2), ay2 = a.select(-1, 3);
  auto bx1 = b.select(-1, 0), by1 = b.select(-1, 1), bx2 = b.select(-1, 2), by2 = b.select(-1, 3);
  auto w1 = ax2 - ax1, h1 = ay2 - ay1 + eps;
  auto w2 = bx2 - bx1, h2 = by2 - by1 + eps;
  auto inter = (at::minimum(ax2, bx2) - at::maximum(ax1, bx1)).clamp_min(0) *
               (at::minimum(ay2, by2) - at::maximum(ay1, by1)).clamp_min(0);
  auto uni = w1 * h1 + w2 * h2 - inter + eps;
  auto iou = inter / uni;
  if (!ciou) return iou;
  auto cw = at::maximum(ax2, bx2) - at::minimum(ax1, bx1);
  auto ch = at::maximum(ay2, by2) - at::minimum(ay1, by1);
  auto c2 = cw.pow(2) + ch.pow(2) + eps;
  auto rho2 = ((bx1 + bx2 - ax1 - ax2).pow(2) + (by1 + by2 - ay1 - ay2).pow(2)) / 4;
  const double k = 4 / (std::numbers::pi * std::numbers::pi);
  auto v = k * (at::atan(w2 / h2) - at::atan(w1 / h1)).pow(2);
  at::Tensor alpha;
  {
    at::NoGradGuard no_grad;
    alpha = v / (v - iou + (1 + eps));
  }
  return iou - (rho2 / c2 + v * alpha);
}

std::pair<at::Tensor, at::Tensor> make_anchors(const std::vector<at::Tensor>& feats,
                                               const std::vector<double>& strides, double offset) {
  TANDEM_CHECK(!feats.empty() && feats.size() == strides.size(),
               "make_anchors: {} feature maps but {} strides", feats.size(), strides.size());
  std::vector<at::Tensor> points, stride_list;
  for (size_t i = 0; i < feats.size(); ++i) {
    const int64_t h = feats[i].size(2), w = feats[i].size(3);
    auto opts = feats[i].options().requires_grad(false);
    auto sx = at::arange(w, opts) + offset;
    auto sy = at::arange(h, opts) + offset;
    auto grid = at::meshgrid({sy, sx}, "ij");
    points.push_back(at::stack({grid[1], grid[0]}, -1).view({-1, 2}));
    stride_list.push_back(at::full({h * w, 1}, strides[i], opts));
  }
  return {at::cat(points), at::cat(stride_list)};
}

at::Tensor dist2bbox(const at::Tensor& distance, const at::Tensor& anchor_points, bool xywh,
                     int64_t dim) {
  auto parts = distance.chunk(2, dim);
  auto x1y1 = anchor_points - parts[0];
  auto x2y2 = anchor_points + parts[1];
  if (xywh) return at::cat({(x1y1 + x2y2) / 2, x2y2 - x1y1}, dim);
  return at::cat({x1y1, x2y2}, dim);
}

at::Tensor bbox2dist(const at::Tensor& anchor_points, const at::Tensor& bbox, double reg_max) {
  auto parts = bbox.chunk(2, -1);
  return at::cat({anchor_points - parts[0], parts[1] - anchor_points}, -1).clamp(0, reg_max - 0.01);
}

}  // namespace tandem::detect
