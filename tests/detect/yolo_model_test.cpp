#include "tandem/detect/yolo_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/rand.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/conv.h>

#include <cmath>

#include "tandem/core/error.h"

namespace tandem::detect {
namespace {

int64_t count_parameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

TEST(YoloModel, ParameterCountsMatchUltralytics) {
  // Ultralytics' summaries for 80 classes: YOLOv8n 3,157,200 parameters and
  // YOLOv8s 11,166,560, of which 16 are the frozen DFL convolution (here the
  // expectation is computed without a parameter): 3,157,184 and 11,166,544
  // ("gradients" in the same summaries).
  YoloModel n(YoloOptions{.scale = YoloScale::kN, .num_classes = 80});
  EXPECT_EQ(count_parameters(*n), 3157184);
  YoloModel s(YoloOptions{.scale = YoloScale::kS, .num_classes = 80});
  EXPECT_EQ(count_parameters(*s), 11166544);
}

TEST(YoloModel, OutputsThreeLevelsAndDecodesToBoxesAndProbabilities) {
  YoloModel model(YoloOptions{.scale = YoloScale::kN, .num_classes = 4});
  model->eval();
  auto raw = model->forward(at::rand({2, 3, 64, 96}));
  ASSERT_EQ(raw.size(), 3u);
  EXPECT_EQ(raw[0].sizes(), (at::IntArrayRef{2, 68, 8, 12}));
  EXPECT_EQ(raw[1].sizes(), (at::IntArrayRef{2, 68, 4, 6}));
  EXPECT_EQ(raw[2].sizes(), (at::IntArrayRef{2, 68, 2, 3}));
  auto pred = model->head()->decode(raw);
  ASSERT_EQ(pred.sizes(), (at::IntArrayRef{2, 8, 96 + 24 + 6}));
  auto probs = pred.narrow(1, 4, 4);
  EXPECT_GE(probs.min().item<float>(), 0.f);
  EXPECT_LE(probs.max().item<float>(), 1.f);
  // Widths and heights are positive and at most 2 x 15 bins x stride.
  auto wh = pred.narrow(1, 2, 2);
  EXPECT_GT(wh.min().item<float>(), 0.f);
  EXPECT_LE(wh.max().item<float>(), 2 * 15 * 32 + 1e-3);
}

TEST(YoloModel, BiasesStartAsUltralytics) {
  YoloModel model(YoloOptions{.scale = YoloScale::kN, .num_classes = 4});
  auto params = model->named_parameters();
  // Class logits: log(5 / 4 / (640 / 8)^2) at stride 8; box logits 1.
  EXPECT_NEAR(params["22.cv3_0.2.bias"][0].item<float>(), std::log(5.0 / 4 / 6400), 1e-5);
  EXPECT_NEAR(params["22.cv3_2.2.bias"][3].item<float>(), std::log(5.0 / 4 / 400), 1e-5);
  EXPECT_FLOAT_EQ(params["22.cv2_1.2.bias"][7].item<float>(), 1.f);
}

TEST(YoloModel, ScalesAndBadInput) {
  EXPECT_EQ(parse_yolo_scale("yolo-n"), YoloScale::kN);
  EXPECT_EQ(parse_yolo_scale("yolov8s.pt"), YoloScale::kS);
  EXPECT_EQ(parse_yolo_scale("m"), YoloScale::kM);
  EXPECT_THROW(parse_yolo_scale("yolo-q"), InvalidArgument);
  EXPECT_EQ(yolo_scale_name(YoloScale::kS), "yolo-s");
  // n: 64 -> 16 channels, 1024 -> 256; repeats 3 -> 1, 6 -> 2.
  auto n = yolo_scale_rule(YoloScale::kN);
  EXPECT_EQ(n.channels(64), 16);
  EXPECT_EQ(n.channels(1024), 256);
  EXPECT_EQ(n.repeats(3), 1);
  EXPECT_EQ(n.repeats(6), 2);
  EXPECT_EQ(yolo_scale_rule(YoloScale::kM).channels(1024), 576);
  YoloModel model(YoloOptions{.num_classes = 2});
  EXPECT_THROW(model->forward(at::rand({1, 3, 60, 64})), InvalidArgument);
  EXPECT_THROW(YoloModel(YoloOptions{.num_classes = 0}), InvalidArgument);
}

TEST(YoloModel, EvalOutputsOfAnImageDoNotDependOnItsBatch) {
  torch::manual_seed(0);
  YoloModel model(YoloOptions{.scale = YoloScale::kN, .num_classes = 4});
  model->eval();
  auto a = at::rand({1, 3, 64, 64}), b = at::rand({1, 3, 64, 64}), c = at::rand({1, 3, 64, 64});
  auto ab = model->forward(at::cat({a, b}, 0));
  auto ac = model->forward(at::cat({a, c}, 0));
  auto alone_a = model->forward(a), alone_b = model->forward(b);
  auto ba = model->forward(at::cat({b, a}, 0));
  for (size_t l = 0; l < 3; ++l) {
    EXPECT_LT((ab[l].narrow(0, 0, 1) - ac[l].narrow(0, 0, 1)).abs().max().item<float>(), 1e-5);
    EXPECT_LT((ab[l].narrow(0, 0, 1) - alone_a[l]).abs().max().item<float>(), 1e-5);
    EXPECT_LT((ab[l].narrow(0, 1, 1) - alone_b[l]).abs().max().item<float>(), 1e-5);
    EXPECT_LT((ba[l].narrow(0, 1, 1) - alone_a[l]).abs().max().item<float>(), 1e-5);
  }
}

}  // namespace
}  // namespace tandem::detect
