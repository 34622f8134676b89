#include "tandem/detect/yolo_blocks.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/max_pool2d.h>
#include <ATen/ops/silu.h>
#include <torch/nn/modules/batchnorm.h>

#include <string>

#include "tandem/core/check.h"

namespace tandem::detect {

torch::nn::AnyModule make_yolo_batch_norm(int64_t num_features) {
  return torch::nn::AnyModule(
      torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(num_features).eps(1e-3).momentum(0.03)));
}

ConvBnActImpl::ConvBnActImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                             const train::NormFactory& norm)
    : in_(in), out_(out), kernel_(kernel), stride_(stride), norm_factory_(norm) {
  TANDEM_CHECK(in > 0 && out > 0 && kernel > 0 && stride > 0,
               "ConvBnAct: channels, kernel and stride must be positive (got in {}, out {}, "
               "kernel {}, stride {})",
               in, out, kernel, stride);
  build();
}

void ConvBnActImpl::build() {
  conv_ = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_, out_, kernel_)
                                                        .stride(stride_)
                                                        .padding(kernel_ / 2)
                                                        .bias(false)));
  bn_ = norm_factory_ ? train::make_norm_layer(norm_factory_, out_) : make_yolo_batch_norm(out_);
  register_module("bn", bn_.ptr());
}

at::Tensor ConvBnActImpl::forward(const at::Tensor& x) {
  return at::silu(bn_.forward(conv_->forward(x)));
}

BottleneckImpl::BottleneckImpl(int64_t in, int64_t out, bool shortcut,
                               const train::NormFactory& norm)
    : in_(in), out_(out), add_(shortcut && in == out), norm_factory_(norm) {
  build();
}

void BottleneckImpl::build() {
  // Ultralytics' C2f bottleneck: k = (3, 3), e = 1.0.
  cv1_ = register_module("cv1", ConvBnAct(in_, out_, 3, 1, norm_factory_));
  cv2_ = register_module("cv2", ConvBnAct(out_, out_, 3, 1, norm_factory_));
}

at::Tensor BottleneckImpl::forward(const at::Tensor& x) {
  at::Tensor y = cv2_->forward(cv1_->forward(x));
  return add_ ? x + y : y;
}

C2fImpl::C2fImpl(int64_t in, int64_t out, int64_t n, bool shortcut, const train::NormFactory& norm)
    : in_(in), out_(out), n_(n), hidden_(out / 2), shortcut_(shortcut), norm_factory_(norm) {
  TANDEM_CHECK(n >= 1 && hidden_ >= 1, "C2f: needs n >= 1 and out >= 2 (got n {}, out {})", n, out);
  build();
}

void C2fImpl::build() {
  cv1_ = register_module("cv1", ConvBnAct(in_, 2 * hidden_, 1, 1, norm_factory_));
  cv2_ = register_module("cv2", ConvBnAct((2 + n_) * hidden_, out_, 1, 1, norm_factory_));
  m_.clear();
  for (int64_t i = 0; i < n_; ++i) {
    m_.push_back(register_module(fmt::format("m{}", i),
                                 Bottleneck(hidden_, hidden_, shortcut_, norm_factory_)));
  }
}

at::Tensor C2fImpl::forward(const at::Tensor& x) {
  std::vector<at::Tensor> y = cv1_->forward(x).chunk(2, 1);
  for (auto& m : m_) y.push_back(m->forward(y.back()));
  return cv2_->forward(at::cat(y, 1));
}

SppfImpl::SppfImpl(int64_t in, int64_t out, int64_t kernel, const train::NormFactory& norm)
    : in_(in), out_(out), kernel_(kernel), norm_factory_(norm) {
  TANDEM_CHECK(kernel % 2 == 1, "SPPF: the pooling kernel must be odd, got {}", kernel);
  build();
}

void SppfImpl::build() {
  cv1_ = register_module("cv1", ConvBnAct(in_, in_ / 2, 1, 1, norm_factory_));
  cv2_ = register_module("cv2", ConvBnAct(in_ / 2 * 4, out_, 1, 1, norm_factory_));
}

at::Tensor SppfImpl::forward(const at::Tensor& x) {
  std::vector<at::Tensor> y = {cv1_->forward(x)};
  for (int i = 0; i < 3; ++i) {
    y.push_back(at::max_pool2d(y.back(), {kernel_, kernel_}, {1, 1}, {kernel_ / 2, kernel_ / 2}));
  }
  return cv2_->forward(at::cat(y, 1));
}

}  // namespace tandem::detect
