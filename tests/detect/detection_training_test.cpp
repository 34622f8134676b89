// Model, loss, data, NMS and metrics together: a hundred optimiser steps on
// one fixed batch of four make-shapes images at imgsz 160 must let the model
// find that batch's objects (the pieces connect and the gradients point the
// right way). The loss itself is no yardstick here: the assigner's targets
// move with the predictions. Not a convergence claim about held-out data.
// At imgsz 64 the same trial fits only the image with the largest objects;
// see docs/detect.md.
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/optim/adam.h>

#include "tandem/detect/box_ops.h"
#include "tandem/detect/collate.h"
#include "tandem/detect/detection_dataset.h"
#include "tandem/detect/detection_loss.h"
#include "tandem/detect/detection_metrics.h"
#include "tandem/detect/make_shapes.h"
#include "tandem/detect/nms.h"
#include "tandem/detect/yolo_model.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::detect {
namespace {

TEST(DetectionTraining, OverfitsAFixedBatchAt160) {
  train::testing::TempDir dir;
  MakeShapesOptions shapes;
  shapes.dir = dir.file("shapes");
  shapes.train = 4;
  shapes.val = 1;
  shapes.imgsz = 160;
  auto config = load_dataset_config(make_shapes(shapes).yaml_path);
  DetectionDatasetOptions o;
  o.imgsz = 160;
  o.cache_labels = false;
  DetectionDataset data(config, Split::kTrain, o);
  std::vector<DetectionSample> samples;
  for (int64_t i = 0; i < data.size(); ++i) samples.push_back(data.get(i));
  DetectionBatch batch = collate(samples);

  torch::manual_seed(0);
  // BatchNorm whose running statistics are those of the last batch, so that
  // evaluation right after a hundred fast-moving steps sees the final
  // weights' statistics (the default momentum of 0.03 needs many more steps).
  auto last_batch_norm = [](int64_t channels) {
    return torch::nn::AnyModule(
        torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(channels).eps(1e-3).momentum(1.0)));
  };
  YoloModel model(YoloOptions{.scale = YoloScale::kN, .num_classes = 4, .norm = last_batch_norm});
  model->train();
  DetectionLoss loss(4);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(2e-3));
  for (int step = 0; step < 100; ++step) {
    opt.zero_grad();
    auto r = loss(model->forward(batch.images), batch.targets);
    r.total.backward();
    opt.step();
    const double value = r.items.sum().item<double>();
    ASSERT_TRUE(std::isfinite(value)) << "step " << step;
  }
  {
    at::NoGradGuard no_grad;
    model->forward(batch.images);  // running statistics of the trained weights
  }
  model->eval();
  NmsOptions nms;
  nms.conf_threshold = 0.001;
  auto detections = non_max_suppression(model->predict(batch.images).detach(), nms);
  DetectionMetrics metrics(4);
  for (int64_t i = 0; i < data.size(); ++i) {
    auto rows =
        batch.targets.index_select(0, (batch.targets.select(1, 0) == i).nonzero().squeeze(1));
    metrics.update(detections[i], xywh_to_xyxy(rows.narrow(1, 2, 4) * 160.0), rows.select(1, 1));
  }
  MetricsSummary s = metrics.compute();
  EXPECT_EQ(s.images, 4);
  for (int64_t i = 0; i < data.size(); ++i) {
    // Every image, not only the easiest, has a confident detection.
    ASSERT_GT(detections[i].size(0), 0) << "image " << i;
    EXPECT_GT(detections[i][0][4].item<float>(), 0.5f) << "image " << i;
  }
  EXPECT_GT(s.map50, 0.5) << "mAP@0.5 on the training batch after 100 steps";
}

}  // namespace
}  // namespace tandem::detect
