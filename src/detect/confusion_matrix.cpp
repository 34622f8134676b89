#include "tandem/detect/confusion_matrix.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "tandem/core/check.h"
#include "tandem/detect/box_ops.h"

namespace tandem::detect {

ConfusionMatrix::ConfusionMatrix(int64_t num_classes, double conf, double iou)
    : num_classes_(num_classes),
      conf_(conf),
      iou_(iou),
      matrix_(at::zeros({num_classes + 1, num_classes + 1}, at::kLong)) {
  TANDEM_CHECK(num_classes >= 1 && conf >= 0 && conf <= 1 && iou >= 0 && iou <= 1,
               "ConfusionMatrix: num_classes must be >= 1 and conf, iou in [0, 1], got {}, {}, {}",
               num_classes, conf, iou);
}

void ConfusionMatrix::update(const at::Tensor& detections, const at::Tensor& gt_boxes,
                             const at::Tensor& gt_classes) {
  TANDEM_CHECK(detections.dim() == 2 && detections.size(1) == 6 && gt_boxes.dim() == 2 &&
                   gt_boxes.size(1) == 4 && gt_classes.numel() == gt_boxes.size(0),
               "ConfusionMatrix::update: detections must be [n, 6] and ground truth [m, 4] with "
               "[m] classes");
  const at::Tensor det =
      detections.index_select(0, (detections.select(1, 4) > conf_).nonzero().squeeze(1))
          .to(at::kDouble)
          .contiguous();
  const at::Tensor gt = gt_classes.reshape({-1}).to(at::kLong).contiguous();
  const int64_t n = det.size(0), m = gt.size(0), bg = num_classes_;
  auto cell = matrix_.accessor<int64_t, 2>();
  auto d = det.accessor<double, 2>();
  auto g = gt.accessor<int64_t, 1>();
  std::vector<std::tuple<double, int64_t, int64_t>> pairs;  // iou, gt, detection
  if (n > 0 && m > 0) {
    const at::Tensor iou = box_iou(gt_boxes.to(at::kDouble), det.narrow(1, 0, 4)).contiguous();
    auto io = iou.accessor<double, 2>();
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        if (io[i][j] > iou_) pairs.emplace_back(io[i][j], i, j);
      }
    }
  }
  std::sort(pairs.begin(), pairs.end(),
            [](const auto& a, const auto& b) { return std::get<0>(a) > std::get<0>(b); });
  std::vector<bool> gt_used(m, false), det_used(n, false);
  for (const auto& [v, i, j] : pairs) {
    if (gt_used[i] || det_used[j]) continue;
    gt_used[i] = det_used[j] = true;
    cell[static_cast<int64_t>(d[j][5])][g[i]] += 1;
  }
  for (int64_t i = 0; i < m; ++i) {
    if (!gt_used[i]) cell[bg][g[i]] += 1;
  }
  for (int64_t j = 0; j < n; ++j) {
    if (!det_used[j]) cell[static_cast<int64_t>(d[j][5])][bg] += 1;
  }
}

}  // namespace tandem::detect
