#include "tandem/train/models/sequential.h"

#include <ATen/ops/arange.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/linear.h>

#include "tandem/core/check.h"
#include "tandem/train/models/gpt_mini.h"
#include "tandem/train/models/mlp.h"
#include "tandem/train/models/models.h"
#include "train/models/registered_child.h"

namespace tandem::train {
namespace {

// registered_child, naming this file in its error.
template <typename H>
H child(torch::nn::Module& parent, const std::string& name) {
  return registered_child<H>(parent, name, "sequential_layers");
}

// GptMini's input layer: token + position embeddings, then dropout.
class GptEmbeddingImpl : public torch::nn::Module {
 public:
  explicit GptEmbeddingImpl(torch::nn::Module& gpt)
      : tokens_(register_module("token_embedding",
                                child<torch::nn::Embedding>(gpt, "token_embedding"))),
        positions_(register_module("position_embedding",
                                   child<torch::nn::Embedding>(gpt, "position_embedding"))),
        dropout_(register_module("dropout", child<torch::nn::Dropout>(gpt, "dropout"))) {}
  at::Tensor forward(const at::Tensor& tokens) {
    TANDEM_CHECK(tokens.dim() == 2 && tokens.size(1) <= positions_->weight.size(0),
                 "GptMini's embedding layer takes [batch, time <= {}] tokens, got {} dimensions",
                 positions_->weight.size(0), tokens.dim());
    at::Tensor positions = at::arange(tokens.size(1), tokens.options());
    return dropout_->forward(tokens_->forward(tokens) + positions_->forward(positions));
  }

 private:
  torch::nn::Embedding tokens_, positions_;
  torch::nn::Dropout dropout_;
};
TORCH_MODULE(GptEmbedding);

// GptMini's output layer: final LayerNorm, then the LM head.
class GptHeadImpl : public torch::nn::Module {
 public:
  explicit GptHeadImpl(torch::nn::Module& gpt)
      : ln_(register_module("ln_final", child<torch::nn::LayerNorm>(gpt, "ln_final"))),
        head_(register_module("lm_head", child<torch::nn::Linear>(gpt, "lm_head"))) {}
  at::Tensor forward(const at::Tensor& x) { return head_->forward(ln_->forward(x)); }

 private:
  torch::nn::LayerNorm ln_;
  torch::nn::Linear head_;
};
TORCH_MODULE(GptHead);

}  // namespace

bool has_sequential_layers(ModelKind kind) {
  return kind == ModelKind::kMlp || kind == ModelKind::kGptMini;
}

bool has_sequential_layers(const std::string& name) {
  return has_sequential_layers(model_kind(name));
}

torch::nn::Sequential sequential_layers(ModelKind kind, const torch::nn::AnyModule& model) {
  TANDEM_CHECK(has_sequential_layers(kind),
               "pipeline parallelism splits the models mlp and gpt-mini into layers, not {}",
               name_of(kind));
  torch::nn::Sequential layers;
  if (kind == ModelKind::kMlp) {
    auto& mlp = *model.get<Mlp>();
    const size_t n = mlp.options().hidden_sizes.size() + 1;
    layers->push_back(torch::nn::Flatten());
    for (size_t i = 0; i < n; ++i) {
      layers->push_back(child<torch::nn::Linear>(mlp, "fc" + std::to_string(i)));
      if (i + 1 < n) layers->push_back(torch::nn::ReLU());
    }
    return layers;
  }
  auto& gpt = *model.get<GptMini>();
  layers->push_back(GptEmbedding(gpt));
  for (int64_t i = 0; i < gpt.options().layers; ++i) {
    layers->push_back(child<GptBlock>(gpt, "block" + std::to_string(i)));
  }
  layers->push_back(GptHead(gpt));
  return layers;
}

torch::nn::Sequential sequential_layers(const std::string& name,
                                        const torch::nn::AnyModule& model) {
  return sequential_layers(model_kind(name), model);
}

}  // namespace tandem::train
