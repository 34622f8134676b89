#include "tandem/detect/yolo_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/upsample_nearest2d.h>

#include <cmath>
#include <string>

#include "tandem/core/check.h"
#include "tandem/detect/yolo_blocks.h"

namespace tandem::detect {

YoloScale parse_yolo_scale(const std::string& text) {
  std::string s = text;
  for (const char* prefix : {"yolov8", "yolo-", "yolo"}) {
    if (s.rfind(prefix, 0) == 0) {
      s = s.substr(std::string(prefix).size());
      break;
    }
  }
  if (s.size() > 3 && s.substr(s.size() - 3) == ".pt") s = s.substr(0, s.size() - 3);
  if (s == "n") return YoloScale::kN;
  if (s == "s") return YoloScale::kS;
  if (s == "m") return YoloScale::kM;
  if (s == "l") return YoloScale::kL;
  if (s == "x") return YoloScale::kX;
  throw InvalidArgument(
      fmt::format("unknown model '{}'; use yolo-n, yolo-s, yolo-m, yolo-l or yolo-x", text));
}

std::string yolo_scale_name(YoloScale scale) {
  const char* letters = "nsmlx";
  return std::string("yolo-") + letters[static_cast<int>(scale)];
}

YoloScaleRule yolo_scale_rule(YoloScale scale) {
  switch (scale) {
    case YoloScale::kN:
      return {0.33, 0.25, 1024};
    case YoloScale::kS:
      return {0.33, 0.50, 1024};
    case YoloScale::kM:
      return {0.67, 0.75, 768};
    case YoloScale::kL:
      return {1.00, 1.00, 512};
    case YoloScale::kX:
      return {1.00, 1.25, 512};
  }
  throw InternalError(fmt::format("unhandled YoloScale {}", static_cast<int>(scale)));
}

int64_t YoloScaleRule::channels(int64_t c) const {
  const double scaled = static_cast<double>(std::min(c, max_channels)) * width;
  return static_cast<int64_t>(std::ceil(scaled / 8.0)) * 8;
}

int64_t YoloScaleRule::repeats(int64_t n) const {
  return n > 1 ? std::max<int64_t>(std::llround(n * depth), 1) : n;
}

YoloModelImpl::YoloModelImpl(YoloOptions options) : options_(std::move(options)) {
  TANDEM_CHECK(options_.num_classes >= 1, "YoloModel: num_classes must be at least 1, got {}",
               options_.num_classes);
  const YoloScaleRule r = yolo_scale_rule(options_.scale);
  const auto& norm = options_.norm;
  const int64_t c64 = r.channels(64), c128 = r.channels(128), c256 = r.channels(256),
                c512 = r.channels(512), c1024 = r.channels(1024);
  const int64_t n3 = r.repeats(3), n6 = r.repeats(6);
  auto add = [this](auto module) {
    const std::string name = std::to_string(layers_.size());
    layers_.emplace_back(register_module(name, module));
  };
  // Backbone.
  add(ConvBnAct(3, c64, 3, 2, norm));       // 0  P1/2
  add(ConvBnAct(c64, c128, 3, 2, norm));    // 1  P2/4
  add(C2f(c128, c128, n3, true, norm));     // 2
  add(ConvBnAct(c128, c256, 3, 2, norm));   // 3  P3/8
  add(C2f(c256, c256, n6, true, norm));     // 4
  add(ConvBnAct(c256, c512, 3, 2, norm));   // 5  P4/16
  add(C2f(c512, c512, n6, true, norm));     // 6
  add(ConvBnAct(c512, c1024, 3, 2, norm));  // 7  P5/32
  add(C2f(c1024, c1024, n3, true, norm));   // 8
  add(Sppf(c1024, c1024, 5, norm));         // 9
  // Neck (10, 11, 13, 14, 17 and 20 are upsample and concat: no parameters).
  layers_.emplace_back();                          // 10 upsample
  layers_.emplace_back();                          // 11 concat with 6
  add(C2f(c1024 + c512, c512, n3, false, norm));   // 12
  layers_.emplace_back();                          // 13 upsample
  layers_.emplace_back();                          // 14 concat with 4
  add(C2f(c512 + c256, c256, n3, false, norm));    // 15 P3 out
  add(ConvBnAct(c256, c256, 3, 2, norm));          // 16
  layers_.emplace_back();                          // 17 concat with 12
  add(C2f(c256 + c512, c512, n3, false, norm));    // 18 P4 out
  add(ConvBnAct(c512, c512, 3, 2, norm));          // 19
  layers_.emplace_back();                          // 20 concat with 9
  add(C2f(c512 + c1024, c1024, n3, false, norm));  // 21 P5 out
  head_ = register_module("22",
                          DetectHead(options_.num_classes, std::vector<int64_t>{c256, c512, c1024},
                                     options_.reg_max, norm));
}

std::vector<at::Tensor> YoloModelImpl::forward(const at::Tensor& images) {
  TANDEM_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) % 32 == 0 &&
                   images.size(3) % 32 == 0 && images.size(2) > 0 && images.size(3) > 0,
               "YoloModel expects [batch, 3, H, W] images with H and W multiples of 32, got "
               "[{}]",
               fmt::join(images.sizes(), ", "));
  auto run = [this](size_t i, const at::Tensor& x) { return layers_[i].forward(x); };
  auto up = [](const at::Tensor& x) {
    return at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2});
  };
  at::Tensor x = images;
  for (size_t i = 0; i <= 3; ++i) x = run(i, x);
  const at::Tensor p3 = run(4, x);
  const at::Tensor p4 = run(6, run(5, p3));
  const at::Tensor p5 = run(9, run(8, run(7, p4)));
  const at::Tensor h12 = run(12, at::cat({up(p5), p4}, 1));
  const at::Tensor out3 = run(15, at::cat({up(h12), p3}, 1));
  const at::Tensor out4 = run(18, at::cat({run(16, out3), h12}, 1));
  const at::Tensor out5 = run(21, at::cat({run(19, out4), p5}, 1));
  return head_->forward({out3, out4, out5});
}

at::Tensor YoloModelImpl::predict(const at::Tensor& images) {
  return head_->decode(forward(images));
}

}  // namespace tandem::detect
