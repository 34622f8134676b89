// GPT-mini split for tensor parallelism (Megatron-LM layout) over the ranks
// of a communicator: the token embedding and the LM head split over the
// vocabulary, each block's attention over its heads and its MLP over the
// hidden features; LayerNorms and the position embedding replicated (their
// inputs are the same on every rank, so are their gradients). Built from a
// whole GptMini, the same on every rank, so it computes exactly what that
// model computes. forward() returns this rank's vocabulary slice of the
// logits; loss() is the cross-entropy over the whole vocabulary without
// gathering them (parallel/tensor_parallel.h).
//
// Collective: forward and backward all-reduce over `comm` on every rank.
// Not thread-safe. Dropout must be 0 (InvalidArgument): ranks would drop
// different units.
#pragma once

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include <torch/ordered_dict.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/parallel/tensor_parallel.h"
#include "tandem/train/models/gpt_mini.h"

namespace tandem::train {

class TensorParallelGptBlockImpl : public torch::nn::Cloneable<TensorParallelGptBlockImpl> {
 public:
  TensorParallelGptBlockImpl(GptBlockImpl& full, int64_t heads,
                             const std::shared_ptr<Communicator>& comm);
  void reset() override {}
  at::Tensor forward(const at::Tensor& x);

  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  parallel::ParallelCausalSelfAttention attn{nullptr};
  parallel::ParallelMlp mlp{nullptr};
};
TORCH_MODULE(TensorParallelGptBlock);

class TensorParallelGptMiniImpl : public torch::nn::Cloneable<TensorParallelGptMiniImpl> {
 public:
  // Throws InvalidArgument if the vocabulary, heads or 4 x width do not
  // divide by comm->size(), or dropout is not 0.
  TensorParallelGptMiniImpl(GptMiniImpl& full, std::shared_ptr<Communicator> comm);
  void reset() override {}
  // tokens [batch, time] -> this rank's logits [batch, time, vocab / tp].
  at::Tensor forward(const at::Tensor& tokens);
  // Collective. Mean cross-entropy of forward(tokens) against `target`.
  at::Tensor loss(const at::Tensor& logits, const at::Tensor& target);
  // Collective. The whole GptMini's parameters under its names and in its
  // order, assembled from every rank's slices (copies, without autograd);
  // only those `keep` accepts, when given (the same on every rank).
  torch::OrderedDict<std::string, at::Tensor> full_parameters(
      const std::function<bool(const std::string&)>& keep = {});
  // The parameters every rank holds whole (LayerNorms, the position
  // embedding, the row-parallel biases): a gradient norm counts them once.
  std::vector<at::Tensor> replicated_parameters() const;
  // The model as layers for a pipeline, sharing these modules: the
  // embeddings, each block, the head (final LayerNorm, LM head); the output
  // is forward()'s, this rank's vocabulary slice of the logits.
  torch::nn::Sequential layers();

  parallel::VocabParallelEmbedding token_embedding{nullptr};
  torch::nn::Embedding position_embedding{nullptr};
  torch::nn::ModuleList blocks;
  torch::nn::LayerNorm ln_final{nullptr};
  parallel::ColumnParallelLinear lm_head{nullptr};

 private:
  std::shared_ptr<Communicator> comm_;
};
TORCH_MODULE(TensorParallelGptMini);

}  // namespace tandem::train
