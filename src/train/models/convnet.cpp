#include "tandem/train/models/convnet.h"

#include <ATen/ops/max_pool2d.h>

#include <string>
#include <utility>

#include "tandem/core/check.h"

namespace tandem::train {
namespace {

// At most 4 stages: 4 halvings already take 28x28 to 1x1.
constexpr size_t kMaxStages = 4;

void check_options(const ConvNetOptions& options) {
  TANDEM_CHECK(options.in_channels > 0, "ConvNetOptions::in_channels must be positive, got {}",
               options.in_channels);
  TANDEM_CHECK(options.classes > 0, "ConvNetOptions::classes must be positive, got {}",
               options.classes);
  TANDEM_CHECK(!options.channels.empty() && options.channels.size() <= kMaxStages,
               "ConvNetOptions::channels must list 1 to {} stages, got {}", kMaxStages,
               options.channels.size());
  for (size_t i = 0; i < options.channels.size(); ++i) {
    TANDEM_CHECK(options.channels[i] > 0, "ConvNetOptions::channels[{}] must be positive, got {}",
                 i, options.channels[i]);
  }
  TANDEM_CHECK((options.image_size >> options.channels.size()) >= 1,
               "ConvNetOptions::image_size {} is too small for {} pooling stages (each halves "
               "it); use an image of at least {} pixels or fewer stages",
               options.image_size, options.channels.size(), 1 << options.channels.size());
}

}  // namespace

ConvNetImpl::ConvNetImpl(ConvNetOptions options) : options_(std::move(options)) {
  check_options(options_);
  int64_t in = options_.in_channels;
  for (size_t i = 0; i < options_.channels.size(); ++i) {
    int64_t out = options_.channels[i];
    // No conv bias: the norm layer's shift makes it redundant.
    auto conv_options = torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(false);
    convs_.push_back(register_module("conv" + std::to_string(i), torch::nn::Conv2d(conv_options)));
    norms_.push_back(make_norm_layer(options_.norm, out));
    register_module("norm" + std::to_string(i), norms_.back().ptr());
    in = out;
  }
  int64_t side = options_.image_size >> options_.channels.size();
  head_ = register_module("head", torch::nn::Linear(in * side * side, options_.classes));
}

at::Tensor ConvNetImpl::forward(const at::Tensor& input) {
  const int64_t s = options_.image_size;
  TANDEM_CHECK(input.dim() == 4 && input.size(1) == options_.in_channels && input.size(2) == s &&
                   input.size(3) == s,
               "ConvNet expects [batch, {}, {}, {}] images, got shape {}; set "
               "ConvNetOptions::in_channels and image_size to match the data",
               options_.in_channels, s, s, fmt::join(input.sizes(), "x"));
  at::Tensor x = input;
  for (size_t i = 0; i < convs_.size(); ++i) {
    x = norms_[i].forward(convs_[i]->forward(x)).relu();
    x = at::max_pool2d(x, {2, 2});
  }
  return head_->forward(x.flatten(1));
}

}  // namespace tandem::train
