// A zoo model's layers as a torch::nn::Sequential, for pipeline parallelism
// (parallel/pipeline.h cuts a Sequential into stages). The Sequential shares
// the model's modules, so its parameters are the model's tensors and its
// forward computes what the model's forward computes:
//   mlp:      Flatten, then each Linear with a ReLU between them.
//   gpt-mini: the embeddings (token + position, dropout), each block, and
//             the head (final LayerNorm, LM head).
// Other models (convnet, resnet18, resnet50) are InvalidArgument naming the
// ones that split. Not thread-safe (like the modules it shares).
#pragma once

#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>

#include <string>

#include "tandem/train/choices.h"

namespace tandem::train {

// True for the models sequential_layers splits. The name form throws what
// model_kind() throws.
bool has_sequential_layers(ModelKind kind);
bool has_sequential_layers(const std::string& name);

// `model` must have been built by make_model(kind, ...).
torch::nn::Sequential sequential_layers(ModelKind kind, const torch::nn::AnyModule& model);
torch::nn::Sequential sequential_layers(const std::string& name, const torch::nn::AnyModule& model);

}  // namespace tandem::train
