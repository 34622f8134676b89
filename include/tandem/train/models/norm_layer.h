// The normalisation layer of the convolutional models (ConvNet, ResNet), made
// pluggable so that data-parallel training can swap plain BatchNorm2d for a
// SyncBatchNorm without touching the model code: a model calls its
// NormFactory once per normalisation layer and stores the result as an
// AnyModule whose forward(at::Tensor) -> at::Tensor it calls.
// Thread-safety: factories are called only while a model is constructed.
#pragma once

#include <torch/nn/modules/container/any.h>

#include <cstdint>
#include <functional>

namespace tandem::train {

// Builds one 2-d normalisation layer over `num_features` channels. The module
// it returns must take and return a [N, num_features, H, W] tensor.
using NormFactory = std::function<torch::nn::AnyModule(int64_t num_features)>;

// Returns an ordinary torch::nn::BatchNorm2d(num_features) (eps 1e-5,
// momentum 0.1, affine), the layer a model uses when its factory is empty.
torch::nn::AnyModule make_batch_norm2d(int64_t num_features);

// Calls `factory`, or make_batch_norm2d where it is empty. Throws
// tandem::InvalidArgument if the factory returns an empty module.
torch::nn::AnyModule make_norm_layer(const NormFactory& factory, int64_t num_features);

}  // namespace tandem::train
