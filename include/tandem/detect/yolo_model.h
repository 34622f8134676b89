// YoloModel: a YOLOv8-style anchor-free detector (Ultralytics' yolov8.yaml):
// a CSP backbone of ConvBnAct and C2f blocks ending in SPPF, a PAN neck
// (top-down then bottom-up, concatenating the backbone's P3/P4/P5) and a
// decoupled DetectHead at strides 8, 16 and 32 with DFL (reg_max 16).
// Scales multiply depth and width as Ultralytics' do:
//   n 0.33/0.25, s 0.33/0.50, m 0.67/0.75 (max 768 channels), l 1.0/1.0 and
//   x 1.0/1.25 (max 512); n and s cap at 1024 channels.
// Submodules are registered under Ultralytics' layer indices ("0" .. "22").
// Not thread-safe (a torch module). Nothing is collective unless the norm
// factory builds SyncBatchNorm, whose training forward is.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/detect/detect_head.h"
#include "tandem/train/models/norm_layer.h"

namespace tandem::detect {

enum class YoloScale { kN, kS, kM, kL, kX };

// Parses "n", "yolo-n", "yolov8n" (and s, m, l, x). Throws
// tandem::InvalidArgument naming the text and the choices otherwise.
YoloScale parse_yolo_scale(const std::string& text);
std::string yolo_scale_name(YoloScale scale);  // "yolo-n", ...

struct YoloOptions {
  YoloScale scale = YoloScale::kN;
  int64_t num_classes = 80;
  int64_t reg_max = 16;          // DFL bins per box side
  train::NormFactory norm = {};  // empty: BatchNorm2d(eps 1e-3, momentum 0.03)
};

// The width and depth rules of Ultralytics' parse_model for `scale`.
struct YoloScaleRule {
  double depth, width;
  int64_t max_channels;
  int64_t channels(int64_t c) const;  // ceil(min(c, max) * width / 8) * 8
  int64_t repeats(int64_t n) const;   // n > 1 ? max(round(n * depth), 1) : n
};
YoloScaleRule yolo_scale_rule(YoloScale scale);

class YoloModelImpl : public torch::nn::Module {
 public:
  explicit YoloModelImpl(YoloOptions options);

  // images [B, 3, H, W] with H and W multiples of 32 -> raw head outputs per
  // level (see DetectHead::forward). Throws tandem::InvalidArgument for
  // another shape.
  std::vector<at::Tensor> forward(const at::Tensor& images);

  // forward then DetectHead::decode: [B, 4 + num_classes, A].
  at::Tensor predict(const at::Tensor& images);

  const YoloOptions& options() const { return options_; }
  DetectHead& head() { return head_; }

 private:
  YoloOptions options_;
  std::vector<torch::nn::AnyModule> layers_;  // 0 .. 21, Ultralytics' indices
  DetectHead head_{nullptr};                  // 22
};
TORCH_MODULE(YoloModel);

}  // namespace tandem::detect
