#include "tandem/train/models/gpt_mini.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/ones.h>
#include <torch/nn/init.h>

#include <cmath>
#include <limits>
#include <string>

#include "tandem/core/check.h"

namespace tandem::train {
namespace {

void check_options(const GptMiniOptions& o) {
  TANDEM_CHECK(o.vocab > 0, "GptMiniOptions::vocab must be positive, got {}", o.vocab);
  TANDEM_CHECK(o.context > 0, "GptMiniOptions::context must be positive, got {}", o.context);
  TANDEM_CHECK(o.layers > 0, "GptMiniOptions::layers must be positive, got {}", o.layers);
  TANDEM_CHECK(o.width > 0, "GptMiniOptions::width must be positive, got {}", o.width);
  TANDEM_CHECK(o.heads > 0, "GptMiniOptions::heads must be positive, got {}", o.heads);
  TANDEM_CHECK(o.width % o.heads == 0,
               "GptMiniOptions::width {} must be divisible by heads {}; choose a width that is a "
               "multiple of the head count",
               o.width, o.heads);
  TANDEM_CHECK(o.dropout >= 0.0 && o.dropout < 1.0,
               "GptMiniOptions::dropout must be in [0, 1), got {}", o.dropout);
}

// GPT-2 initialisation: N(0, 0.02) Linear and Embedding weights, zero
// biases, so the residual stream and the first logits start small. LayerNorm
// keeps its default (gain 1, shift 0).
void init_gpt_weights(torch::nn::Module& model) {
  at::NoGradGuard no_grad;
  for (const auto& module : model.modules(/*include_self=*/false)) {
    if (auto* linear = module->as<torch::nn::Linear>()) {
      torch::nn::init::normal_(linear->weight, 0.0, 0.02);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* embedding = module->as<torch::nn::Embedding>()) {
      torch::nn::init::normal_(embedding->weight, 0.0, 0.02);
    }
  }
}

}  // namespace

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const GptMiniOptions& options)
    : heads_(options.heads) {
  qkv_ = register_module("qkv", torch::nn::Linear(options.width, 3 * options.width));
  proj_ = register_module("proj", torch::nn::Linear(options.width, options.width));
  attn_dropout_ = register_module("attn_dropout", torch::nn::Dropout(options.dropout));
  resid_dropout_ = register_module("resid_dropout", torch::nn::Dropout(options.dropout));
}

at::Tensor CausalSelfAttentionImpl::forward(const at::Tensor& x) {
  const int64_t batch = x.size(0), time = x.size(1), width = x.size(2);
  const int64_t head_dim = width / heads_;
  // [B, T, 3C] -> three [B, heads, T, head_dim].
  auto split = [&](const at::Tensor& t) {
    return t.view({batch, time, heads_, head_dim}).transpose(1, 2);
  };
  std::vector<at::Tensor> qkv = qkv_->forward(x).split(width, 2);
  at::Tensor q = split(qkv[0]), k = split(qkv[1]), v = split(qkv[2]);
  at::Tensor scores = q.matmul(k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim));
  // Position i may attend to positions j <= i: mask the strict upper triangle.
  at::Tensor future = at::ones({time, time}, x.options().dtype(at::kBool)).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  at::Tensor attention = attn_dropout_->forward(scores.softmax(-1));
  at::Tensor y = attention.matmul(v).transpose(1, 2).contiguous().view({batch, time, width});
  return resid_dropout_->forward(proj_->forward(y));
}

GptBlockImpl::GptBlockImpl(const GptMiniOptions& options) {
  ln1_ = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.width})));
  attn_ = register_module("attn", CausalSelfAttention(options));
  ln2_ = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.width})));
  fc_ = register_module("fc", torch::nn::Linear(options.width, 4 * options.width));
  fc_proj_ = register_module("fc_proj", torch::nn::Linear(4 * options.width, options.width));
  dropout_ = register_module("dropout", torch::nn::Dropout(options.dropout));
}

at::Tensor GptBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = x + attn_->forward(ln1_->forward(x));
  at::Tensor mlp = fc_proj_->forward(at::gelu(fc_->forward(ln2_->forward(h))));
  return h + dropout_->forward(mlp);
}

GptMiniImpl::GptMiniImpl(GptMiniOptions options) : options_(options) {
  check_options(options_);
  token_embedding_ =
      register_module("token_embedding", torch::nn::Embedding(options_.vocab, options_.width));
  position_embedding_ =
      register_module("position_embedding", torch::nn::Embedding(options_.context, options_.width));
  dropout_ = register_module("dropout", torch::nn::Dropout(options_.dropout));
  for (int64_t i = 0; i < options_.layers; ++i) {
    blocks_.push_back(register_module("block" + std::to_string(i), GptBlock(options_)));
  }
  ln_final_ = register_module("ln_final",
                              torch::nn::LayerNorm(torch::nn::LayerNormOptions({options_.width})));
  lm_head_ = register_module("lm_head", torch::nn::Linear(options_.width, options_.vocab));
  init_gpt_weights(*this);
}

at::Tensor GptMiniImpl::forward(const at::Tensor& tokens) {
  TANDEM_CHECK(tokens.dim() == 2 && tokens.scalar_type() == at::kLong,
               "GptMini expects int64 tokens of shape [batch, time], got {} of shape {}",
               c10::toString(tokens.scalar_type()), fmt::join(tokens.sizes(), "x"));
  const int64_t time = tokens.size(1);
  TANDEM_CHECK(time <= options_.context,
               "GptMini got sequences of {} tokens, longer than its context of {}; shorten the "
               "sequences or raise GptMiniOptions::context",
               time, options_.context);
  at::Tensor positions = at::arange(time, tokens.options());
  at::Tensor x = token_embedding_->forward(tokens) + position_embedding_->forward(positions);
  x = dropout_->forward(x);
  for (auto& block : blocks_) x = block->forward(x);
  return lm_head_->forward(ln_final_->forward(x));
}

}  // namespace tandem::train
