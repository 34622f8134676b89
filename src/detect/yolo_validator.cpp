#include "tandem/detect/yolo_validator.h"

#include <ATen/TensorIndexing.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>

#include "tandem/core/check.h"
#include "tandem/detect/box_ops.h"
#include "tandem/detect/confusion_matrix.h"
#include "tandem/detect/nms.h"

namespace tandem::detect {
namespace {

// Every rank's rows of `t` ([n_r, cols] double), in rank order (collective).
at::Tensor gather_rows(Communicator& comm, const at::Tensor& t) {
  const int world = comm.size();
  const int64_t cols = t.size(1);
  at::Tensor counts = at::zeros({world}, at::kLong);
  counts[comm.rank()] = t.size(0);
  comm.all_reduce(counts);
  const int64_t most = counts.max().item<int64_t>();
  at::Tensor padded = at::zeros({most, cols}, at::kDouble);
  padded.narrow(0, 0, t.size(0)).copy_(t);
  at::Tensor all = at::empty({world * most * cols}, at::kDouble);
  comm.all_gather(all, padded.reshape({-1}));
  all = all.view({world, most, cols});
  std::vector<at::Tensor> parts;
  for (int r = 0; r < world; ++r) parts.push_back(all[r].narrow(0, 0, counts[r].item<int64_t>()));
  return at::cat(parts);
}

}  // namespace

double fitness_of(const MetricsSummary& s) { return 0.1 * s.map50 + 0.9 * s.map50_95; }

ValResult validate_yolo(YoloModelImpl& model, const DetectionDataset& data, int64_t batch,
                        const DetectionLoss& loss, const std::shared_ptr<Communicator>& comm,
                        const LoaderOptions& loader) {
  TANDEM_CHECK(batch >= 1, "validate_yolo: batch must be at least 1, got {}", batch);
  const int world = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  const auto dtype = model.parameters().front().scalar_type();
  const double side = static_cast<double>(data.options().imgsz);
  model.eval();
  at::NoGradGuard no_grad;
  DetectionMetrics metrics(data.num_classes());
  ConfusionMatrix confusion(data.num_classes());
  at::Tensor loss_sum = at::zeros({4}, at::kDouble);  // box, cls, dfl, batches
  // Rank r's shard: images r, r + W, ..., in batches.
  std::vector<std::vector<int64_t>> mine;
  for (int64_t i = rank, k = 0; i < data.size(); i += world, ++k) {
    if (k % batch == 0) mine.emplace_back();
    mine.back().push_back(i);
  }
  DetectionLoader shard(data, std::move(mine), 0, loader);
  for (int64_t step = 0; step < shard.size(); ++step) {
    DetectionBatch b = shard.next();
    auto raw = model.forward(b.images.to(dtype));
    loss_sum.narrow(0, 0, 3).add_(loss(raw, b.targets).items.to(at::kDouble));
    loss_sum[3] += 1;
    NmsOptions nms;
    nms.conf_threshold = 0.001;
    auto detections = non_max_suppression(model.head()->decode(raw), nms);
    for (int64_t i = 0; i < static_cast<int64_t>(detections.size()); ++i) {
      auto rows = b.targets.index_select(0, (b.targets.select(1, 0) == i).nonzero().squeeze(1));
      const at::Tensor det = detections[i].to(at::kFloat);
      const at::Tensor gt_boxes = xywh_to_xyxy(rows.narrow(1, 2, 4) * side);
      metrics.update(det, gt_boxes, rows.select(1, 1));
      confusion.update(det, gt_boxes, rows.select(1, 1));
    }
  }
  ValResult r;
  if (world > 1) {
    comm->all_reduce(loss_sum);
    comm->all_reduce(confusion.matrix());
    at::Tensor preds =
        at::cat({metrics.tp().to(at::kDouble), metrics.conf().unsqueeze(1).to(at::kDouble),
                 metrics.pred_cls().unsqueeze(1).to(at::kDouble)},
                1);
    at::Tensor all_preds = gather_rows(*comm, preds);
    at::Tensor all_targets = gather_rows(*comm, metrics.target_cls().unsqueeze(1).to(at::kDouble));
    at::Tensor images = at::tensor({metrics.images()}, at::kLong);
    comm->all_reduce(images);
    const int64_t t = metrics.tp().size(1);
    metrics = DetectionMetrics::from_statistics(data.num_classes(), all_preds.narrow(1, 0, t),
                                                all_preds.select(1, t), all_preds.select(1, t + 1),
                                                all_targets.select(1, 0), images.item<int64_t>());
  }
  r.metrics = metrics.compute();
  r.statistics = std::make_shared<const DetectionMetrics>(std::move(metrics));
  const double batches = std::max(1.0, loss_sum[3].item<double>());
  for (int k = 0; k < 3; ++k) r.loss[k] = loss_sum[k].item<double>() / batches;
  r.fitness = fitness_of(r.metrics);
  r.confusion = confusion.matrix();
  return r;
}

}  // namespace tandem::detect
