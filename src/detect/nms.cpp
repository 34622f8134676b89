#include "tandem/detect/nms.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/tensor.h>

#include <vector>

#include "tandem/core/check.h"
#include "tandem/detect/box_ops.h"

namespace tandem::detect {
namespace {

// Class offsets larger than any image keep classes apart in one NMS pass.
constexpr double kClassOffset = 7680;

}  // namespace

at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  TANDEM_CHECK(boxes.dim() == 2 && boxes.size(1) == 4 && scores.dim() == 1 &&
                   scores.size(0) == boxes.size(0),
               "nms: expects boxes [N, 4] and scores [N], got [{}] and [{}]",
               fmt::join(boxes.sizes(), ", "), fmt::join(scores.sizes(), ", "));
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  auto order = scores.argsort(0, /*descending=*/true);
  auto sorted = boxes.index_select(0, order).to(at::kCPU, at::kDouble).contiguous();
  auto iou = box_iou(sorted, sorted, 0.0);
  auto acc = iou.accessor<double, 2>();
  std::vector<bool> removed(n, false);
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < n; ++i) {
    if (removed[i]) continue;
    keep.push_back(i);
    for (int64_t j = i + 1; j < n; ++j) {
      if (!removed[j] && acc[i][j] > iou_threshold) removed[j] = true;
    }
  }
  auto kept = at::tensor(keep, at::kLong).to(boxes.device());
  return order.index_select(0, kept);
}

std::vector<at::Tensor> non_max_suppression(const at::Tensor& prediction,
                                            const NmsOptions& options) {
  TANDEM_CHECK(prediction.dim() == 3 && prediction.size(1) > 4,
               "non_max_suppression: expects [batch, 4 + classes, anchors], got [{}]",
               fmt::join(prediction.sizes(), ", "));
  TANDEM_CHECK(options.conf_threshold >= 0 && options.conf_threshold <= 1 &&
                   options.iou_threshold >= 0 && options.iou_threshold <= 1,
               "non_max_suppression: conf {} and iou {} must be in [0, 1]", options.conf_threshold,
               options.iou_threshold);
  const int64_t classes = prediction.size(1) - 4;
  std::vector<at::Tensor> out;
  for (int64_t b = 0; b < prediction.size(0); ++b) {
    auto x = prediction[b].transpose(0, 1);  // [A, 4 + C]
    auto [conf, cls] = x.narrow(1, 4, classes).max(1);
    auto candidates = (conf > options.conf_threshold).nonzero().squeeze(1);
    if (candidates.size(0) > options.max_candidates) {
      auto top = conf.index_select(0, candidates).topk(options.max_candidates);
      candidates = candidates.index_select(0, std::get<1>(top));
    }
    auto boxes = xywh_to_xyxy(x.narrow(1, 0, 4).index_select(0, candidates));
    auto c = conf.index_select(0, candidates);
    auto k = cls.index_select(0, candidates).to(boxes.scalar_type());
    auto shifted = options.agnostic ? boxes : boxes + k.unsqueeze(1) * kClassOffset;
    auto keep = nms(shifted, c, options.iou_threshold);
    if (keep.size(0) > options.max_det) keep = keep.narrow(0, 0, options.max_det);
    out.push_back(at::cat({boxes.index_select(0, keep), c.index_select(0, keep).unsqueeze(1),
                           k.index_select(0, keep).unsqueeze(1)},
                          1));
  }
  return out;
}

}  // namespace tandem::detect
