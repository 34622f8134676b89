// GPT-mini: a decoder-only transformer language model (GPT-2 layout, pre-norm).
// Token and learned position embeddings, `layers` blocks of
// x + attn(LayerNorm(x)) and x + mlp(LayerNorm(x)), a final LayerNorm and an
// untied LM head. Attention is causal multi-head self-attention built from
// plain Linear layers and an explicit mask, so tensor-parallel code can split
// its weights. Not thread-safe (like any torch::nn::Module).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

namespace tandem::train {

struct GptMiniOptions {
  // Number of distinct tokens; inputs must lie in [0, vocab).
  int64_t vocab = 256;
  // Longest sequence (number of learned positions); forward rejects longer.
  int64_t context = 128;
  // Number of transformer blocks.
  int64_t layers = 4;
  // Embedding width; must be divisible by heads.
  int64_t width = 128;
  // Attention heads; each has width / heads dimensions.
  int64_t heads = 4;
  // Dropout probability on embeddings, attention weights and residual
  // branches, in [0, 1). 0 makes training deterministic and cheaper.
  double dropout = 0.0;
};

// Causal multi-head self-attention: one Linear to q, k, v, softmax over the
// allowed (earlier or same) positions, and an output projection.
class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit CausalSelfAttentionImpl(const GptMiniOptions& options);
  // [B, T, width] -> [B, T, width].
  at::Tensor forward(const at::Tensor& x);

 private:
  int64_t heads_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
  torch::nn::Dropout attn_dropout_{nullptr}, resid_dropout_{nullptr};
};
TORCH_MODULE(CausalSelfAttention);

// LayerNorm -> attention -> residual, LayerNorm -> MLP (4x, GELU) -> residual.
class GptBlockImpl : public torch::nn::Module {
 public:
  explicit GptBlockImpl(const GptMiniOptions& options);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::LayerNorm ln1_{nullptr}, ln2_{nullptr};
  CausalSelfAttention attn_{nullptr};
  torch::nn::Linear fc_{nullptr}, fc_proj_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(GptBlock);

class GptMiniImpl : public torch::nn::Module {
 public:
  // Throws tandem::InvalidArgument on a non-positive size, width not
  // divisible by heads, or dropout outside [0, 1).
  explicit GptMiniImpl(GptMiniOptions options = {});

  // tokens [B, T] int64 with T <= context -> logits [B, T, vocab]; position t
  // depends only on tokens 0..t. Throws tandem::InvalidArgument on another
  // rank or dtype, or T > context.
  at::Tensor forward(const at::Tensor& tokens);

  const GptMiniOptions& options() const { return options_; }

 private:
  GptMiniOptions options_;
  torch::nn::Embedding token_embedding_{nullptr}, position_embedding_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  std::vector<GptBlock> blocks_;
  torch::nn::LayerNorm ln_final_{nullptr};
  torch::nn::Linear lm_head_{nullptr};
};
TORCH_MODULE(GptMini);

}  // namespace tandem::train
