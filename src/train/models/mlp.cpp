#include "tandem/train/models/mlp.h"

#include <string>
#include <utility>

#include "tandem/core/check.h"

namespace tandem::train {
namespace {

void check_options(const MlpOptions& options) {
  TANDEM_CHECK(options.input_size > 0, "MlpOptions::input_size must be positive, got {}",
               options.input_size);
  TANDEM_CHECK(options.classes > 0, "MlpOptions::classes must be positive, got {}",
               options.classes);
  for (size_t i = 0; i < options.hidden_sizes.size(); ++i) {
    TANDEM_CHECK(options.hidden_sizes[i] > 0,
                 "MlpOptions::hidden_sizes[{}] must be positive, got {}", i,
                 options.hidden_sizes[i]);
  }
}

// The in/out features of each Linear layer, input to output.
std::vector<std::pair<int64_t, int64_t>> layer_shapes(const MlpOptions& options) {
  std::vector<std::pair<int64_t, int64_t>> shapes;
  int64_t in = options.input_size;
  for (int64_t out : options.hidden_sizes) {
    shapes.emplace_back(in, out);
    in = out;
  }
  shapes.emplace_back(in, options.classes);
  return shapes;
}

}  // namespace

MlpImpl::MlpImpl(MlpOptions options) : options_(std::move(options)) {
  check_options(options_);
  for (const auto& [in, out] : layer_shapes(options_)) {
    std::string name = "fc" + std::to_string(layers_.size());
    layers_.push_back(register_module(name, torch::nn::Linear(in, out)));
  }
}

at::Tensor MlpImpl::forward(const at::Tensor& input) {
  TANDEM_CHECK(input.dim() >= 2 && input.numel() / input.size(0) == options_.input_size,
               "Mlp expects [batch, ...] with {} features per sample, got shape {}",
               options_.input_size, fmt::join(input.sizes(), "x"));
  at::Tensor x = input.flatten(1);
  for (size_t i = 0; i < layers_.size(); ++i) {
    x = layers_[i]->forward(x);
    if (i + 1 < layers_.size()) x = x.relu();
  }
  return x;
}

int64_t mlp_parameter_count(const MlpOptions& options) {
  check_options(options);
  int64_t count = 0;
  for (const auto& [in, out] : layer_shapes(options)) count += in * out + out;
  return count;
}

}  // namespace tandem::train
