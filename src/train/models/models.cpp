#include "tandem/train/models/models.h"

#include <algorithm>

#include "tandem/core/check.h"

namespace tandem::train {
namespace {

void check_known(const std::string& name) {
  const auto& names = model_names();
  TANDEM_CHECK(std::find(names.begin(), names.end(), name) != names.end(),
               "unknown model '{}'; known models: {}", name, fmt::join(names, ", "));
}

}  // namespace

std::vector<int64_t> ModelInput::input_shape(int64_t batch) const {
  std::vector<int64_t> shape{batch};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  return shape;
}

std::vector<int64_t> ModelInput::target_batch_shape(int64_t batch) const {
  std::vector<int64_t> shape{batch};
  shape.insert(shape.end(), target_shape.begin(), target_shape.end());
  return shape;
}

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> kNames = {"mlp", "convnet", "resnet18", "resnet50",
                                                  "gpt-mini"};
  return kNames;
}

torch::nn::AnyModule make_model(const std::string& name, const ModelOptions& options) {
  check_known(name);
  if (name == "mlp") return torch::nn::AnyModule(Mlp(options.mlp));
  if (name == "convnet") return torch::nn::AnyModule(ConvNet(options.convnet));
  if (name == "resnet18") return torch::nn::AnyModule(make_resnet18(options.resnet18));
  if (name == "resnet50") return torch::nn::AnyModule(make_resnet50(options.resnet50));
  return torch::nn::AnyModule(GptMini(options.gpt_mini));
}

ModelInput input_spec(const std::string& name, const ModelOptions& options) {
  check_known(name);
  if (name == "mlp") {
    return {.sample_shape = {options.mlp.input_size}, .classes = options.mlp.classes};
  }
  if (name == "convnet") {
    const auto& o = options.convnet;
    return {.sample_shape = {o.in_channels, o.image_size, o.image_size}, .classes = o.classes};
  }
  if (name == "resnet18" || name == "resnet50") {
    const auto& o = name == "resnet18" ? options.resnet18 : options.resnet50;
    return {.sample_shape = {o.in_channels, o.image_size, o.image_size}, .classes = o.classes};
  }
  const auto& o = options.gpt_mini;
  return {.sample_shape = {o.context},
          .dtype = c10::kLong,
          .token_range = o.vocab,
          .target_shape = {o.context},
          .classes = o.vocab};
}

}  // namespace tandem::train
