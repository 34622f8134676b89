// The model zoo behind `tandem train --model NAME`: builds a model by kind
// (ModelKind, choices.h) or name and describes the input it expects, so the
// trainer can generate synthetic batches. Names: mlp, convnet, resnet18,
// resnet50, gpt-mini (Choices<ModelKind>). Every model's
// forward takes one at::Tensor and returns logits. Thread-safe: the functions
// hold no state (building a model draws from LibTorch's global RNG, so call
// torch::manual_seed first for reproducible weights).
#pragma once

#include <c10/core/ScalarType.h>
#include <torch/nn/modules/container/any.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/train/choices.h"
#include "tandem/train/models/convnet.h"
#include "tandem/train/models/gpt_mini.h"
#include "tandem/train/models/mlp.h"
#include "tandem/train/models/resnet.h"

namespace tandem::train {

// Per-model settings; make_model reads only the entry of the model it builds.
struct ModelOptions {
  MlpOptions mlp;
  ConvNetOptions convnet;
  ResNetOptions resnet18;
  // ImageNet layout by default; set classes, image_size (and stem) for CIFAR.
  ResNetOptions resnet50 = {.classes = 1000, .image_size = 224, .stem = ResNetStem::kImageNet};
  GptMiniOptions gpt_mini;
};

// What a model consumes and predicts, for synthetic data.
struct ModelInput {
  // Shape of one sample, without the batch dimension.
  std::vector<int64_t> sample_shape = {};
  // c10::kFloat for images/features; c10::kLong for token ids.
  c10::ScalarType dtype = c10::kFloat;
  // For kLong inputs, ids lie in [0, token_range); 0 for float inputs.
  int64_t token_range = 0;
  // Shape of one sample's target, without the batch dimension: {} for a
  // class label, {T} for next-token targets.
  std::vector<int64_t> target_shape = {};
  // Targets are int64 class ids in [0, classes) (the vocab for gpt-mini).
  int64_t classes = 0;

  // {batch, sample_shape...} and {batch, target_shape...}.
  std::vector<int64_t> input_shape(int64_t batch) const;
  std::vector<int64_t> target_batch_shape(int64_t batch) const;
};

// The names make_model accepts, in a stable order.
const std::vector<std::string>& model_names();

// The kind a name spells. Throws tandem::InvalidArgument for an unknown
// name, listing the known ones.
ModelKind model_kind(const std::string& name);

// Builds the model with its entry of `options`. Throws
// tandem::InvalidArgument for an unknown name (listing the known ones) or bad
// options. The AnyModule's ptr() is the torch::nn::Module to train or wrap in
// DistributedDataParallel; forward(at::Tensor) returns the logits.
torch::nn::AnyModule make_model(ModelKind kind, const ModelOptions& options = {});
torch::nn::AnyModule make_model(const std::string& name, const ModelOptions& options = {});

// The input and target that make_model(kind or name, options) expects.
// Throws tandem::InvalidArgument for an unknown name.
ModelInput input_spec(ModelKind kind, const ModelOptions& options = {});
ModelInput input_spec(const std::string& name, const ModelOptions& options = {});

}  // namespace tandem::train
