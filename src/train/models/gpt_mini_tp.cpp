#include "tandem/train/models/gpt_mini_tp.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>

#include <vector>

#include "tandem/core/check.h"
#include "train/models/registered_child.h"

namespace tandem::train {
namespace {

// registered_child, naming this file in its error.
template <typename H>
H child(torch::nn::Module& parent, const std::string& name) {
  return registered_child<H>(parent, name, "TensorParallelGptMini");
}

// A replicated copy: the same values on every rank, a parameter of its own.
template <typename H>
H replica(const H& full) {
  return H(std::dynamic_pointer_cast<typename H::ContainedType>(full->clone()));
}

// Every rank's `local` stacked along dimension `dim` in rank order.
at::Tensor gathered(const at::Tensor& local, int64_t dim, Communicator& comm) {
  at::Tensor moved = local.detach().movedim(dim, 0).contiguous();
  std::vector<int64_t> sizes = moved.sizes().vec();
  sizes[0] *= comm.size();
  at::Tensor out = at::empty(sizes, moved.options());
  comm.all_gather(out, moved);
  return out.movedim(0, dim).contiguous();
}

// The pipeline's first layer: the vocabulary-split token embedding plus
// the replicated position embedding.
class TensorParallelGptEmbeddingImpl : public torch::nn::Module {
 public:
  TensorParallelGptEmbeddingImpl(parallel::VocabParallelEmbedding tokens,
                                 torch::nn::Embedding positions)
      : tokens_(register_module("token_embedding", std::move(tokens))),
        positions_(register_module("position_embedding", std::move(positions))) {}
  at::Tensor forward(const at::Tensor& tokens) {
    return tokens_(tokens) + positions_(at::arange(tokens.size(1), tokens.options()));
  }

 private:
  parallel::VocabParallelEmbedding tokens_;
  torch::nn::Embedding positions_;
};
TORCH_MODULE(TensorParallelGptEmbedding);

// The pipeline's last layer: the final LayerNorm and the vocabulary-split head.
class TensorParallelGptHeadImpl : public torch::nn::Module {
 public:
  TensorParallelGptHeadImpl(torch::nn::LayerNorm ln, parallel::ColumnParallelLinear head)
      : ln_(register_module("ln_final", std::move(ln))),
        head_(register_module("lm_head", std::move(head))) {}
  at::Tensor forward(const at::Tensor& x) { return head_(ln_(x)); }

 private:
  torch::nn::LayerNorm ln_;
  parallel::ColumnParallelLinear head_;
};
TORCH_MODULE(TensorParallelGptHead);

}  // namespace

TensorParallelGptBlockImpl::TensorParallelGptBlockImpl(GptBlockImpl& full, int64_t heads,
                                                       const std::shared_ptr<Communicator>& comm) {
  ln1 = register_module("ln1", replica(child<torch::nn::LayerNorm>(full, "ln1")));
  ln2 = register_module("ln2", replica(child<torch::nn::LayerNorm>(full, "ln2")));
  auto& attention = *full.named_children()["attn"];
  attn = register_module("attn", parallel::ParallelCausalSelfAttention(
                                     child<torch::nn::Linear>(attention, "qkv"),
                                     child<torch::nn::Linear>(attention, "proj"), heads, comm));
  mlp = register_module("mlp",
                        parallel::ParallelMlp(child<torch::nn::Linear>(full, "fc"),
                                              child<torch::nn::Linear>(full, "fc_proj"), comm));
}

at::Tensor TensorParallelGptBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = x + attn(ln1(x));
  return h + mlp(ln2(h));
}

TensorParallelGptMiniImpl::TensorParallelGptMiniImpl(GptMiniImpl& full,
                                                     std::shared_ptr<Communicator> comm)
    : comm_(std::move(comm)) {
  TANDEM_CHECK(comm_ != nullptr, "TensorParallelGptMini: the communicator is null");
  const GptMiniOptions& o = full.options();
  TANDEM_CHECK(o.dropout == 0.0,
               "TensorParallelGptMini: dropout must be 0 (got {}); ranks would drop different "
               "units of the replicated activations",
               o.dropout);
  TANDEM_CHECK(o.heads % comm_->size() == 0 && o.vocab % comm_->size() == 0,
               "TensorParallelGptMini: {} heads and a vocabulary of {} must divide by the {} "
               "tensor-parallel ranks",
               o.heads, o.vocab, comm_->size());
  token_embedding = register_module(
      "token_embedding", parallel::VocabParallelEmbedding(
                             child<torch::nn::Embedding>(full, "token_embedding"), comm_));
  position_embedding = register_module(
      "position_embedding", replica(child<torch::nn::Embedding>(full, "position_embedding")));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.layers; ++i) {
    auto& block = *std::dynamic_pointer_cast<GptBlockImpl>(
        full.named_children()["block" + std::to_string(i)]);
    blocks->push_back(TensorParallelGptBlock(block, o.heads, comm_));
  }
  ln_final = register_module("ln_final", replica(child<torch::nn::LayerNorm>(full, "ln_final")));
  lm_head = register_module(
      "lm_head", parallel::ColumnParallelLinear(child<torch::nn::Linear>(full, "lm_head"), comm_));
}

at::Tensor TensorParallelGptMiniImpl::forward(const at::Tensor& tokens) {
  at::Tensor positions = at::arange(tokens.size(1), tokens.options());
  at::Tensor x = token_embedding(tokens) + position_embedding(positions);
  for (const auto& block : *blocks) x = block->as<TensorParallelGptBlockImpl>()->forward(x);
  return lm_head(ln_final(x));
}

torch::OrderedDict<std::string, at::Tensor> TensorParallelGptMiniImpl::full_parameters(
    const std::function<bool(const std::string&)>& keep) {
  at::NoGradGuard no_grad;
  Communicator& comm = *comm_;
  torch::OrderedDict<std::string, at::Tensor> out;
  auto wanted = [&](const std::string& name) { return !keep || keep(name); };
  auto whole = [&](const std::string& name, const at::Tensor& t) {
    if (wanted(name)) out.insert(name, t.detach().clone());
  };
  auto rows = [&](const std::string& name, const at::Tensor& t) {
    if (wanted(name)) out.insert(name, gathered(t, 0, comm));
  };
  auto columns = [&](const std::string& name, const at::Tensor& t) {
    if (wanted(name)) out.insert(name, gathered(t, 1, comm));
  };
  auto norm = [&](const std::string& name, const torch::nn::LayerNorm& ln) {
    whole(name + ".weight", ln->weight);
    whole(name + ".bias", ln->bias);
  };
  // q, k and v: each rank holds its heads' rows of all three, [q_r; k_r; v_r].
  auto qkv = [&](const std::string& name, const at::Tensor& t) {
    if (!wanted(name)) return;
    at::Tensor all = gathered(t, 0, comm);  // [tp x 3 x rows, ...]
    std::vector<int64_t> shape = {comm.size(), 3, t.size(0) / 3};
    for (int64_t d = 1; d < t.dim(); ++d) shape.push_back(t.size(d));
    std::vector<int64_t> merged = {3 * comm.size() * (t.size(0) / 3)};
    for (int64_t d = 1; d < t.dim(); ++d) merged.push_back(t.size(d));
    out.insert(name, all.view(shape).transpose(0, 1).reshape(merged));
  };
  rows("token_embedding.weight", token_embedding->weight);
  whole("position_embedding.weight", position_embedding->weight);
  for (size_t i = 0; i < blocks->size(); ++i) {
    const std::string b = "block" + std::to_string(i) + ".";
    auto& block = *blocks[i]->as<TensorParallelGptBlockImpl>();
    norm(b + "ln1", block.ln1);
    qkv(b + "attn.qkv.weight", block.attn->qkv_weight);
    if (block.attn->qkv_bias.defined()) qkv(b + "attn.qkv.bias", block.attn->qkv_bias);
    columns(b + "attn.proj.weight", block.attn->proj->weight);
    whole(b + "attn.proj.bias", block.attn->proj->bias);
    norm(b + "ln2", block.ln2);
    rows(b + "fc.weight", block.mlp->up->weight);
    rows(b + "fc.bias", block.mlp->up->bias);
    columns(b + "fc_proj.weight", block.mlp->down->weight);
    whole(b + "fc_proj.bias", block.mlp->down->bias);
  }
  norm("ln_final", ln_final);
  rows("lm_head.weight", lm_head->weight);
  rows("lm_head.bias", lm_head->bias);
  return out;
}

std::vector<at::Tensor> TensorParallelGptMiniImpl::replicated_parameters() const {
  std::vector<at::Tensor> out = {position_embedding->weight, ln_final->weight, ln_final->bias};
  for (const auto& b : *blocks) {
    const auto& block = *b->as<TensorParallelGptBlockImpl>();
    for (const auto& ln : {block.ln1, block.ln2}) {
      out.push_back(ln->weight);
      out.push_back(ln->bias);
    }
    out.push_back(block.attn->proj->bias);
    out.push_back(block.mlp->down->bias);
  }
  return out;
}

torch::nn::Sequential TensorParallelGptMiniImpl::layers() {
  torch::nn::Sequential out;
  out->push_back(TensorParallelGptEmbedding(token_embedding, position_embedding));
  for (const auto& block : *blocks) {
    out->push_back(
        TensorParallelGptBlock(std::dynamic_pointer_cast<TensorParallelGptBlockImpl>(block)));
  }
  out->push_back(TensorParallelGptHead(ln_final, lm_head));
  return out;
}

at::Tensor TensorParallelGptMiniImpl::loss(const at::Tensor& logits, const at::Tensor& target) {
  return parallel::vocab_parallel_cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                target.reshape({-1}), *comm_);
}

}  // namespace tandem::train
