#include "tandem/train/models/norm_layer.h"

#include <torch/nn/modules/batchnorm.h>

#include "tandem/core/check.h"

namespace tandem::train {

torch::nn::AnyModule make_batch_norm2d(int64_t num_features) {
  return torch::nn::AnyModule(torch::nn::BatchNorm2d(num_features));
}

torch::nn::AnyModule make_norm_layer(const NormFactory& factory, int64_t num_features) {
  if (!factory) return make_batch_norm2d(num_features);
  torch::nn::AnyModule layer = factory(num_features);
  TANDEM_CHECK(!layer.is_empty(),
               "the norm factory returned an empty module for {} features; return a module "
               "such as torch::nn::BatchNorm2d({})",
               num_features, num_features);
  return layer;
}

}  // namespace tandem::train
