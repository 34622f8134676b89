#include "tandem/parallel/tensor_parallel.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/triu.h>

#include <cmath>
#include <limits>
#include <torch/csrc/autograd/custom_function.h>

#include "tandem/core/check.h"

namespace tandem::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Note [Communicator in autograd context]: saved_data holds IValues, which
// cannot hold a Communicator; the pointer is kept as an integer. The layers'
// contract (the communicator outlives the graph) keeps it valid.
int64_t handle(Communicator& comm) { return reinterpret_cast<int64_t>(&comm); }
Communicator& from_handle(AutogradContext* ctx) {
  return *reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
}

at::Tensor all_reduced(const at::Tensor& t, Communicator& comm) {
  at::Tensor out = t.contiguous().clone();
  comm.all_reduce(out);
  return out;
}

struct CopyToRegion : torch::autograd::Function<CopyToRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t comm) {
    ctx->saved_data["comm"] = comm;
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {all_reduced(grads[0], from_handle(ctx)), at::Tensor()};
  }
};

struct ReduceFromRegion : torch::autograd::Function<ReduceFromRegion> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, int64_t comm) {
    return all_reduced(x, *reinterpret_cast<Communicator*>(comm));
  }
  static variable_list backward(AutogradContext*, variable_list grads) {
    return {grads[0], at::Tensor()};
  }
};

struct GatherFromRegion : torch::autograd::Function<GatherFromRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t comm_handle) {
    auto& comm = *reinterpret_cast<Communicator*>(comm_handle);
    ctx->saved_data["comm"] = comm_handle;
    // Gather the last dimension: move it first, gather flat, move it back.
    at::Tensor local = x.movedim(-1, 0).contiguous();
    at::Tensor all = at::empty({local.numel() * comm.size()}, local.options());
    comm.all_gather(all, local.reshape(-1));
    std::vector<int64_t> sizes = local.sizes().vec();
    sizes[0] *= comm.size();
    return all.view(sizes).movedim(0, -1).contiguous();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Communicator& comm = from_handle(ctx);
    const int64_t width = grads[0].size(-1) / comm.size();
    return {grads[0].narrow(-1, comm.rank() * width, width).contiguous(), at::Tensor()};
  }
};

// Forward: the mean over rows of log(sum_j exp(z_j)) - z_target, with the
// max, the sum and the target logit all-reduced over the vocabulary's
// shards. Backward: (softmax - onehot) / N on this rank's columns.
struct VocabCrossEntropy : torch::autograd::Function<VocabCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits,
                            const at::Tensor& target, int64_t comm_handle) {
    auto& comm = *reinterpret_cast<Communicator*>(comm_handle);
    const int64_t width = logits.size(1), first = comm.rank() * width;
    at::Tensor max = std::get<0>(logits.max(1)).contiguous();
    comm.all_reduce(max, ReduceOp::kMax);
    at::Tensor shifted = logits - max.unsqueeze(1);
    at::Tensor exp = shifted.exp();
    at::Tensor sum = exp.sum(1).contiguous();
    comm.all_reduce(sum);
    at::Tensor local = target - first;
    at::Tensor mine = (local >= 0).logical_and(local < width);
    at::Tensor picked =
        shifted.gather(1, local.clamp(0, width - 1).unsqueeze(1)).squeeze(1) * mine;
    picked = picked.contiguous();
    comm.all_reduce(picked);
    ctx->save_for_backward({exp / sum.unsqueeze(1), local, mine});
    return (sum.log() - picked).mean();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    at::Tensor grad = saved[0].clone();  // softmax over the full vocabulary, my columns
    const at::Tensor& local = saved[1];
    const at::Tensor& mine = saved[2];
    const int64_t width = grad.size(1);
    grad.scatter_add_(1, local.clamp(0, width - 1).unsqueeze(1),
                      -mine.to(grad.scalar_type()).unsqueeze(1));
    return {grad * (grads[0] / grad.size(0)), at::Tensor(), at::Tensor()};
  }
};

int64_t split_size(int64_t features, Communicator& comm, const char* what) {
  TANDEM_CHECK(features % comm.size() == 0,
               "{}: {} features do not split evenly over {} tensor-parallel ranks", what,
               features, comm.size());
  return features / comm.size();
}

}  // namespace

at::Tensor copy_to_tensor_parallel(const at::Tensor& x, Communicator& comm) {
  return CopyToRegion::apply(x, handle(comm));
}
at::Tensor reduce_from_tensor_parallel(const at::Tensor& x, Communicator& comm) {
  return ReduceFromRegion::apply(x, handle(comm));
}
at::Tensor gather_from_tensor_parallel(const at::Tensor& x, Communicator& comm) {
  return GatherFromRegion::apply(x, handle(comm));
}

at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& target,
                                        Communicator& comm) {
  TANDEM_CHECK(logits.dim() == 2 && target.dim() == 1 && target.size(0) == logits.size(0) &&
                   target.scalar_type() == at::kLong,
               "vocab_parallel_cross_entropy: logits [N, vocab / tp] and int64 targets [N] "
               "expected (got {} and {} dims)",
               logits.dim(), target.dim());
  return VocabCrossEntropy::apply(logits, target, handle(comm));
}

VocabParallelEmbeddingImpl::VocabParallelEmbeddingImpl(const torch::nn::Embedding& full,
                                                       std::shared_ptr<Communicator> comm)
    : comm_(std::move(comm)) {
  TANDEM_CHECK(comm_ != nullptr, "VocabParallelEmbedding: the communicator is null");
  const int64_t rows = split_size(full->weight.size(0), *comm_, "VocabParallelEmbedding");
  first_ = comm_->rank() * rows;
  at::NoGradGuard no_grad;
  weight = register_parameter("weight", full->weight.narrow(0, first_, rows).clone());
}

at::Tensor VocabParallelEmbeddingImpl::forward(const at::Tensor& tokens) {
  at::Tensor local = tokens - first_;
  at::Tensor mine = (local >= 0).logical_and(local < weight.size(0));
  std::vector<int64_t> shape = tokens.sizes().vec();
  shape.push_back(weight.size(1));
  at::Tensor rows =
      weight.index_select(0, local.clamp(0, weight.size(0) - 1).reshape(-1)).view(shape);
  return reduce_from_tensor_parallel(rows * mine.unsqueeze(-1).to(rows.scalar_type()), *comm_);
}

ColumnParallelLinearImpl::ColumnParallelLinearImpl(const torch::nn::Linear& full,
                                                   std::shared_ptr<Communicator> comm,
                                                   bool gather_output)
    : comm_(std::move(comm)), gather_output_(gather_output) {
  TANDEM_CHECK(comm_ != nullptr, "ColumnParallelLinear: the communicator is null");
  const int64_t rows = split_size(full->weight.size(0), *comm_, "ColumnParallelLinear");
  const int64_t first = comm_->rank() * rows;
  at::NoGradGuard no_grad;
  weight = register_parameter("weight", full->weight.narrow(0, first, rows).clone());
  if (full->bias.defined()) {
    bias = register_parameter("bias", full->bias.narrow(0, first, rows).clone());
  }
}

at::Tensor ColumnParallelLinearImpl::forward(const at::Tensor& x) {
  at::Tensor y = at::linear(copy_to_tensor_parallel(x, *comm_), weight, bias);
  return gather_output_ ? gather_from_tensor_parallel(y, *comm_) : y;
}

RowParallelLinearImpl::RowParallelLinearImpl(const torch::nn::Linear& full,
                                             std::shared_ptr<Communicator> comm)
    : comm_(std::move(comm)) {
  TANDEM_CHECK(comm_ != nullptr, "RowParallelLinear: the communicator is null");
  const int64_t cols = split_size(full->weight.size(1), *comm_, "RowParallelLinear");
  at::NoGradGuard no_grad;
  weight = register_parameter("weight", full->weight.narrow(1, comm_->rank() * cols, cols).clone());
  if (full->bias.defined()) bias = register_parameter("bias", full->bias.clone());
}

at::Tensor RowParallelLinearImpl::forward(const at::Tensor& x) {
  at::Tensor y = reduce_from_tensor_parallel(at::linear(x, weight), *comm_);
  return bias.defined() ? y + bias : y;
}

ParallelCausalSelfAttentionImpl::ParallelCausalSelfAttentionImpl(
    const torch::nn::Linear& qkv, const torch::nn::Linear& proj, int64_t heads,
    std::shared_ptr<Communicator> comm)
    : comm_(std::move(comm)) {
  TANDEM_CHECK(comm_ != nullptr, "ParallelCausalSelfAttention: the communicator is null");
  TANDEM_CHECK(heads % comm_->size() == 0,
               "ParallelCausalSelfAttention: {} heads do not split evenly over {} "
               "tensor-parallel ranks",
               heads, comm_->size());
  const int64_t width = proj->weight.size(0);
  TANDEM_CHECK(qkv->weight.size(0) == 3 * width && width % heads == 0,
               "ParallelCausalSelfAttention: qkv must map {} to 3 x {} features", width, width);
  local_heads_ = heads / comm_->size();
  const int64_t rows = width / comm_->size(), first = comm_->rank() * rows;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> w, b;
  for (int64_t part = 0; part < 3; ++part) {  // q, k, v
    w.push_back(qkv->weight.narrow(0, part * width + first, rows));
    if (qkv->bias.defined()) b.push_back(qkv->bias.narrow(0, part * width + first, rows));
  }
  qkv_weight = register_parameter("qkv_weight", at::cat(w).clone());
  if (!b.empty()) qkv_bias = register_parameter("qkv_bias", at::cat(b).clone());
  this->proj = register_module("proj", RowParallelLinear(proj, comm_));
}

at::Tensor ParallelCausalSelfAttentionImpl::forward(const at::Tensor& x) {
  const int64_t batch = x.size(0), time = x.size(1);
  const int64_t local_width = qkv_weight.size(0) / 3, head_dim = local_width / local_heads_;
  at::Tensor fused = at::linear(copy_to_tensor_parallel(x, *comm_), qkv_weight, qkv_bias);
  std::vector<at::Tensor> qkv = fused.split(local_width, 2);
  auto heads = [&](const at::Tensor& t) {
    return t.view({batch, time, local_heads_, head_dim}).transpose(1, 2);
  };
  at::Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
  at::Tensor scores = q.matmul(k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim));
  at::Tensor future = at::ones({time, time}, x.options().dtype(at::kBool)).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
  at::Tensor y = scores.softmax(-1).matmul(v).transpose(1, 2).contiguous();
  return proj(y.view({batch, time, local_width}));
}

ParallelMlpImpl::ParallelMlpImpl(const torch::nn::Linear& up_full,
                                 const torch::nn::Linear& down_full,
                                 std::shared_ptr<Communicator> comm) {
  up = register_module("up", ColumnParallelLinear(up_full, comm));
  down = register_module("down", RowParallelLinear(down_full, comm));
}

at::Tensor ParallelMlpImpl::forward(const at::Tensor& x) { return down(at::gelu(up(x))); }

}  // namespace tandem::parallel
