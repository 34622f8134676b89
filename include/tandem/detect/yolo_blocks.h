// The building blocks of the YOLOv8-style detector, as Ultralytics defines
// them (ultralytics/nn/modules/block.py and conv.py):
//   ConvBnAct   Conv2d (no bias, "same" padding) + norm + SiLU
//   Bottleneck  two 3x3 ConvBnAct with an optional residual
//   C2f         split, a chain of Bottlenecks, concatenate every output, 1x1 fuse
//   Sppf        spatial pyramid pooling: three chained 5x5 max pools, concatenated
// The norm layer is pluggable (train::NormFactory) so that DDP training can
// use SyncBatchNorm; empty means BatchNorm2d with Ultralytics' eps 1e-3 and
// momentum 0.03. Not thread-safe (torch modules).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "tandem/train/models/norm_layer.h"

namespace tandem::detect {

// BatchNorm2d(num_features) with eps 1e-3 and momentum 0.03 (Ultralytics').
torch::nn::AnyModule make_yolo_batch_norm(int64_t num_features);

class ConvBnActImpl : public torch::nn::Module {
 public:
  ConvBnActImpl(int64_t in, int64_t out, int64_t kernel = 1, int64_t stride = 1,
                const train::NormFactory& norm = {});
  at::Tensor forward(const at::Tensor& x);

 private:
  void build();
  int64_t in_, out_, kernel_, stride_;
  train::NormFactory norm_factory_;
  torch::nn::Conv2d conv_{nullptr};
  torch::nn::AnyModule bn_;
};
TORCH_MODULE(ConvBnAct);

class BottleneckImpl : public torch::nn::Module {
 public:
  BottleneckImpl(int64_t in, int64_t out, bool shortcut, const train::NormFactory& norm = {});
  at::Tensor forward(const at::Tensor& x);

 private:
  void build();
  int64_t in_, out_;
  bool add_;
  train::NormFactory norm_factory_;
  ConvBnAct cv1_{nullptr}, cv2_{nullptr};
};
TORCH_MODULE(Bottleneck);

class C2fImpl : public torch::nn::Module {
 public:
  // `n` Bottlenecks over half of `out` channels.
  C2fImpl(int64_t in, int64_t out, int64_t n, bool shortcut, const train::NormFactory& norm = {});
  at::Tensor forward(const at::Tensor& x);

 private:
  void build();
  int64_t in_, out_, n_, hidden_;
  bool shortcut_;
  train::NormFactory norm_factory_;
  ConvBnAct cv1_{nullptr}, cv2_{nullptr};
  std::vector<Bottleneck> m_;
};
TORCH_MODULE(C2f);

class SppfImpl : public torch::nn::Module {
 public:
  SppfImpl(int64_t in, int64_t out, int64_t kernel = 5, const train::NormFactory& norm = {});
  at::Tensor forward(const at::Tensor& x);

 private:
  void build();
  int64_t in_, out_, kernel_;
  train::NormFactory norm_factory_;
  ConvBnAct cv1_{nullptr}, cv2_{nullptr};
};
TORCH_MODULE(Sppf);

}  // namespace tandem::detect
