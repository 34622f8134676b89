#include "tandem/train/models/models.h"

#include "tandem/core/check.h"

namespace tandem::train {

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
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> names;
    for (const auto& [kind, name] : Choices<ModelKind>::kNames) names.emplace_back(name);
    return names;
  }();
  return kNames;
}

ModelKind model_kind(const std::string& name) {
  const auto kind = find_choice<ModelKind>(name);
  TANDEM_CHECK(kind.has_value(), "unknown model '{}'; known models: {}", name,
               choice_names<ModelKind>());
  return *kind;
}

torch::nn::AnyModule make_model(ModelKind kind, const ModelOptions& options) {
  switch (kind) {
    case ModelKind::kMlp:
      return torch::nn::AnyModule(Mlp(options.mlp));
    case ModelKind::kConvNet:
      return torch::nn::AnyModule(ConvNet(options.convnet));
    case ModelKind::kResNet18:
      return torch::nn::AnyModule(make_resnet18(options.resnet18));
    case ModelKind::kResNet50:
      return torch::nn::AnyModule(make_resnet50(options.resnet50));
    case ModelKind::kGptMini:
      break;
  }
  return torch::nn::AnyModule(GptMini(options.gpt_mini));
}

torch::nn::AnyModule make_model(const std::string& name, const ModelOptions& options) {
  return make_model(model_kind(name), options);
}

namespace {

ModelInput image_input(int64_t channels, int64_t size, int64_t classes) {
  return {.sample_shape = {channels, size, size}, .classes = classes};
}

}  // namespace

ModelInput input_spec(ModelKind kind, const ModelOptions& options) {
  switch (kind) {
    case ModelKind::kMlp:
      return {.sample_shape = {options.mlp.input_size}, .classes = options.mlp.classes};
    case ModelKind::kConvNet: {
      const auto& o = options.convnet;
      return image_input(o.in_channels, o.image_size, o.classes);
    }
    case ModelKind::kResNet18:
    case ModelKind::kResNet50: {
      const auto& o = kind == ModelKind::kResNet18 ? options.resnet18 : options.resnet50;
      return image_input(o.in_channels, o.image_size, o.classes);
    }
    case ModelKind::kGptMini:
      break;
  }
  const auto& o = options.gpt_mini;
  return {.sample_shape = {o.context},
          .dtype = c10::kLong,
          .token_range = o.vocab,
          .target_shape = {o.context},
          .classes = o.vocab};
}

ModelInput input_spec(const std::string& name, const ModelOptions& options) {
  return input_spec(model_kind(name), options);
}

}  // namespace tandem::train
