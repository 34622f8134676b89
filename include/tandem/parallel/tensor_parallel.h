// Tensor parallelism (Megatron-LM, Shoeybi et al. 2019): a layer's weight
// matrix split across the ranks of a communicator (the tensor dimension of a
// DeviceMesh), with the collectives placed so that forward and backward
// compute exactly what the unsplit layer computes.
//   ColumnParallelLinear: y_r = x W_r^T + b_r with W's output rows split;
//     its input enters through copy_to_tensor_parallel (identity forward,
//     all-reduce of the input gradient backward). Optionally all-gathers
//     the outputs.
//   RowParallelLinear: y = sum_r x_r W_r^T + b with W's input columns split;
//     the partial products leave through reduce_from_tensor_parallel
//     (all-reduce forward, identity backward), then the bias is added once.
//   ParallelMlp: column (h -> f) -> GELU -> row (f -> h): one all-reduce
//     forward and one backward per block.
//   VocabParallelEmbedding: the vocabulary's rows split; each rank looks up
//     the tokens in its range (zeros elsewhere) and the results are summed.
//   vocab_parallel_cross_entropy: the mean cross-entropy of logits split
//     over the vocabulary (a column layer's ungathered output), from the
//     all-reduced max, sum of exponentials and target logit, never
//     gathering the full logits.
//   ParallelCausalSelfAttention: the heads split across ranks; the fused
//     q/k/v projection is column-parallel (each rank keeps its heads' rows
//     of q, k and v), the output projection row-parallel.
// Layers are built from the unsplit torch::nn::Linear (the same on every
// rank), so tests and checkpoints can compare against it.
//
// Collective: every forward and backward through these layers all-reduces
// over `comm`, so every rank runs the same layers in the same order. The
// communicator must outlive the autograd graphs built with it. Not
// thread-safe.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <memory>

#include "tandem/comm/communicator.h"

namespace tandem::parallel {

// Identity forward; the gradient is all-reduced (summed) backward.
at::Tensor copy_to_tensor_parallel(const at::Tensor& x, Communicator& comm);
// All-reduce (sum) forward; identity backward.
at::Tensor reduce_from_tensor_parallel(const at::Tensor& x, Communicator& comm);
// All-gather along the last dimension forward (rank order); backward keeps
// this rank's slice of the gradient.
at::Tensor gather_from_tensor_parallel(const at::Tensor& x, Communicator& comm);

class ColumnParallelLinearImpl : public torch::nn::Cloneable<ColumnParallelLinearImpl> {
 public:
  // This rank's out_features / size() rows of `full` (InvalidArgument
  // unless they divide evenly).
  ColumnParallelLinearImpl(const torch::nn::Linear& full, std::shared_ptr<Communicator> comm,
                           bool gather_output = false);
  void reset() override {}
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight, bias;  // [out / tp, in], [out / tp] (undefined without bias)

 private:
  std::shared_ptr<Communicator> comm_;
  bool gather_output_ = false;
};
TORCH_MODULE(ColumnParallelLinear);

class RowParallelLinearImpl : public torch::nn::Cloneable<RowParallelLinearImpl> {
 public:
  // This rank's in_features / size() columns of `full`; the bias whole.
  // The input is this rank's slice of the features (a column layer's output).
  RowParallelLinearImpl(const torch::nn::Linear& full, std::shared_ptr<Communicator> comm);
  void reset() override {}
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight, bias;  // [out, in / tp], [out]

 private:
  std::shared_ptr<Communicator> comm_;
};
TORCH_MODULE(RowParallelLinear);

class ParallelMlpImpl : public torch::nn::Cloneable<ParallelMlpImpl> {
 public:
  // `up`: h -> f, `down`: f -> h, unsplit.
  ParallelMlpImpl(const torch::nn::Linear& up, const torch::nn::Linear& down,
                  std::shared_ptr<Communicator> comm);
  void reset() override {}
  at::Tensor forward(const at::Tensor& x);

  ColumnParallelLinear up{nullptr};
  RowParallelLinear down{nullptr};
};
TORCH_MODULE(ParallelMlp);

// Collective. `logits`: [N, vocab / tp], this rank's columns in rank order;
// `target`: [N] int64 token ids over the whole vocabulary. Returns the mean
// loss (the same on every rank); backward gives each rank its columns of
// the full gradient.
at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& target,
                                        Communicator& comm);

class VocabParallelEmbeddingImpl : public torch::nn::Cloneable<VocabParallelEmbeddingImpl> {
 public:
  // This rank's num_embeddings / size() rows of `full` (InvalidArgument
  // unless they divide evenly).
  VocabParallelEmbeddingImpl(const torch::nn::Embedding& full, std::shared_ptr<Communicator> comm);
  void reset() override {}
  at::Tensor forward(const at::Tensor& tokens);

  at::Tensor weight;  // [vocab / tp, width]

 private:
  std::shared_ptr<Communicator> comm_;
  int64_t first_ = 0;
};
TORCH_MODULE(VocabParallelEmbedding);

class ParallelCausalSelfAttentionImpl
    : public torch::nn::Cloneable<ParallelCausalSelfAttentionImpl> {
 public:
  // `qkv`: width -> 3 width (rows q, k, v), `proj`: width -> width, unsplit,
  // as in GPT-2; `heads` must divide by the ranks (InvalidArgument).
  ParallelCausalSelfAttentionImpl(const torch::nn::Linear& qkv, const torch::nn::Linear& proj,
                                  int64_t heads, std::shared_ptr<Communicator> comm);
  void reset() override {}
  // x: [batch, time, width]; causal attention over this rank's heads.
  at::Tensor forward(const at::Tensor& x);

  at::Tensor qkv_weight, qkv_bias;  // [3 width / tp, width]: q, k, v rows of this rank's heads
  RowParallelLinear proj{nullptr};

 private:
  std::shared_ptr<Communicator> comm_;
  int64_t local_heads_ = 0;
};
TORCH_MODULE(ParallelCausalSelfAttention);

}  // namespace tandem::parallel
