#include "tandem/train/mesh_model.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include <cmath>
#include <map>
#include <set>

#include "tandem/core/check.h"
#include "tandem/parallel/pipeline.h"
#include "tandem/parallel/tensor_parallel.h"
#include "tandem/train/models/gpt_mini_tp.h"
#include "tandem/train/models/models.h"
#include "tandem/train/models/sequential.h"
#include "tandem/train/strategy.h"
#include "train/trainer_support.h"

namespace tandem::train {

namespace {

// eval_sums() as the pipeline's metric takes it: a float64 [3] tensor.
at::Tensor eval_tensor(const at::Tensor& logits, const at::Tensor& target) {
  const EvalSums s = eval_sums(logits, target);
  return at::tensor(std::vector<double>{s.loss, s.correct, s.count}, at::kDouble);
}

}  // namespace

struct MeshModel::Impl {
  TrainerOptions options;
  MeshShape shape;
  std::unique_ptr<DeviceMesh> mesh;
  std::shared_ptr<Communicator> data, pipe, tensor;  // the dp, pp and tp communicators
  std::unique_ptr<parallel::Pipeline> pipeline;
  TensorParallelGptMini tensor_parallel{nullptr};
  torch::nn::AnyModule whole;                // neither pp nor tp
  std::shared_ptr<torch::nn::Module> local;  // what this rank trains
  std::unique_ptr<Strategy> strategy;
  // Parameters every tensor-parallel rank holds whole, by TensorImpl.
  std::set<const void*> replicated;
  // pp: the whole model's parameter names, shapes and dtypes in order, the
  // layer of the Sequential each belongs to, and without tp the tensor
  // itself if this rank's stage holds it (the stage shares the model's).
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    at::ScalarType dtype;
    int layer = 0;
    at::Tensor mine;
  };
  std::vector<Entry> entries;
  parallel::PipelineStepStats last;

  // The loss of logits (this tp rank's vocabulary slice under tp).
  at::Tensor loss(const at::Tensor& logits, const at::Tensor& target) {
    return tensor_parallel ? tensor_parallel->loss(logits, target) : loss_of(logits, target);
  }
  // Evaluation sums of logits (gathered over tp first).
  at::Tensor eval(const at::Tensor& logits, const at::Tensor& target) {
    return eval_tensor(
        tensor_parallel ? parallel::gather_from_tensor_parallel(logits, *tensor) : logits, target);
  }
  void clip_grad_norm(double max_norm);
};

// Scales the gradients to a global 2-norm of at most max_norm, as
// torch::nn::utils::clip_grad_norm_ does for the whole model: squares are
// summed over the stages and slices (a replicated parameter once), not over
// the data dimension, whose ranks hold the same averaged gradients.
void MeshModel::Impl::clip_grad_norm(double max_norm) {
  std::vector<at::Tensor> grads;
  double local = 0;
  for (const auto& p : this->local->parameters()) {
    if (!p.grad().defined()) continue;
    const double sq = p.grad().pow(2).sum().item<double>();
    local += replicated.count(p.unsafeGetTensorImpl()) ? sq / shape.tp : sq;
    grads.push_back(p.grad());
  }
  at::Tensor total = at::tensor({local}, at::kDouble);
  pipe->all_reduce(total);
  tensor->all_reduce(total);
  const double norm = std::sqrt(total.item<double>());
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1) return;
  at::NoGradGuard no_grad;
  for (auto& g : grads) g.mul_(coef);
}

MeshModel::MeshModel(const TrainerOptions& o, std::shared_ptr<Communicator> world,
                     std::shared_ptr<TraceRecorder> trace)
    : Strategy(nullptr), impl_(std::make_unique<Impl>()) {
  TANDEM_CHECK(world != nullptr, "MeshModel: the communicator is null");
  TANDEM_CHECK(o.mesh.shape.has_value(), "MeshModel: TrainerOptions::mesh.shape is empty");
  validate_options(o, world->size());
  Impl& m = *impl_;
  m.options = o;
  m.shape = *o.mesh.shape;
  m.mesh = std::make_unique<DeviceMesh>(world, std::vector<int>{m.shape.dp, m.shape.pp, m.shape.tp},
                                        std::vector<std::string>{"dp", "pp", "tp"});
  m.data = m.mesh->get("dp");
  m.pipe = m.mesh->get("pp");
  m.tensor = m.mesh->get("tp");

  at::manual_seed(o.run.seed);  // every rank builds the same whole model
  torch::nn::AnyModule model = make_model(o.model.kind, ModelOptions{});
  if (o.model.dtype == Dtype::kFloat64) model.ptr()->to(at::kDouble);
  // The pipeline's layers: the whole model's, or under tp the split model's,
  // which mirror them one for one.
  torch::nn::Sequential layers{nullptr};
  if (m.shape.pp > 1) layers = sequential_layers(o.model.kind, model);
  if (m.shape.tp > 1) {
    m.tensor_parallel = TensorParallelGptMini(*model.get<GptMini>(), m.tensor);
    for (const auto& p : m.tensor_parallel->replicated_parameters()) {
      m.replicated.insert(p.unsafeGetTensorImpl());
    }
  }
  if (m.shape.pp > 1) {
    parallel::PipelineOptions po;
    po.micro_batches = o.mesh.micro_batches;
    po.schedule = o.mesh.schedule;
    po.recompute = o.mesh.recompute;
    po.trace = trace;
    po.wrap_backward = [this](bool last, const std::function<void()>& backward) {
      std::shared_ptr<void> hold = last ? nullptr : impl_->strategy->accumulate_locally();
      backward();
    };
    m.pipeline = std::make_unique<parallel::Pipeline>(
        m.tensor_parallel ? m.tensor_parallel->layers() : layers, m.pipe, po);
    m.local = m.pipeline->stage_module().ptr();
    const auto [first, last] = m.pipeline->layer_range();
    std::map<const void*, int> layer_of;  // the whole model's parameters
    for (size_t l = 0; l < layers->size(); ++l) {
      for (const auto& p : layers->ptr(l)->parameters()) {
        layer_of[p.unsafeGetTensorImpl()] = static_cast<int>(l);
      }
    }
    for (const auto& item : model.ptr()->named_parameters()) {
      const int layer = layer_of.at(item.value().unsafeGetTensorImpl());
      const bool held = layer >= first && layer < last && !m.tensor_parallel;
      m.entries.push_back({item.key(), item.value().sizes().vec(), item.value().scalar_type(),
                           layer, held ? item.value() : at::Tensor()});
    }
    if (m.tensor_parallel) {
      // The split model's other stages' slices are not this rank's to keep.
      std::set<const void*> stage;
      for (const auto& p : m.local->parameters()) stage.insert(p.unsafeGetTensorImpl());
      at::NoGradGuard no_grad;
      for (auto& p : m.tensor_parallel->parameters()) {
        if (stage.count(p.unsafeGetTensorImpl()) == 0) p.set_data(at::empty({0}, p.options()));
      }
    }
  } else if (m.tensor_parallel) {
    m.local = m.tensor_parallel.ptr();
  } else {
    m.whole = model;
    m.local = model.ptr();
  }
  TrainerOptions dp = o;
  if (m.shape.dp == 1) dp.strategy.kind = StrategyKind::kNone;
  m.strategy = make_strategy(dp, m.local, m.data, trace);
  module_ = m.local;
}

MeshModel::~MeshModel() = default;

const DeviceMesh& MeshModel::mesh() const { return *impl_->mesh; }
const std::shared_ptr<Communicator>& MeshModel::data() const { return impl_->data; }

double MeshModel::train_step(const at::Tensor& input, const at::Tensor& target, double lr) {
  Impl& m = *impl_;
  m.strategy->set_lr(lr);
  m.strategy->zero_grad();
  double loss = 0;
  if (m.pipeline) {
    m.last = m.pipeline->train_step(
        input, target, [&m](const at::Tensor& y, const at::Tensor& t) { return m.loss(y, t); });
    loss = m.last.loss;
  } else {
    at::Tensor logits = m.tensor_parallel ? m.tensor_parallel(input) : m.whole.forward(input);
    at::Tensor l = m.loss(logits, target);
    l.backward();
    loss = l.item<double>();
  }
  if (m.options.optimizer.clip_grad_norm > 0) m.clip_grad_norm(m.options.optimizer.clip_grad_norm);
  m.strategy->step();
  return average_over_ranks(*m.data, {loss})[0];
}

double MeshModel::train_step(const Batch& batch, double lr, const StepContext&) {
  return train_step(batch.input, batch.target, lr);
}

EvalSums MeshModel::evaluate(const Batch& batch, const StepContext&) {
  return evaluate(batch.input, batch.target);
}

void MeshModel::set_lr(double lr) { impl_->strategy->set_lr(lr); }
void MeshModel::zero_grad() { impl_->strategy->zero_grad(); }
void MeshModel::clip_grad_norm(double max_norm) { impl_->clip_grad_norm(max_norm); }
void MeshModel::step() { impl_->strategy->step(); }

uint64_t MeshModel::state_digest() {
  return train::state_digest(full_parameters(), torch::OrderedDict<std::string, at::Tensor>());
}

EvalSums MeshModel::evaluate(const at::Tensor& input, const at::Tensor& target) {
  Impl& m = *impl_;
  m.local->eval();
  at::Tensor sums;
  if (m.pipeline) {
    sums = m.pipeline->forward_only(
        input, target, parallel::PipelineMetric{3, [&m](const at::Tensor& y, const at::Tensor& t) {
                                                  return m.eval(y, t);
                                                }});
  } else {
    at::NoGradGuard no_grad;
    sums = m.eval(m.tensor_parallel ? m.tensor_parallel(input) : m.whole.forward(input), target);
  }
  m.local->train();
  const double* v = sums.data_ptr<double>();
  return EvalSums{v[0], v[1], v[2]};
}

torch::OrderedDict<std::string, at::Tensor> MeshModel::full_parameters() {
  Impl& m = *impl_;
  torch::OrderedDict<std::string, at::Tensor> out;
  if (!m.pipeline) {
    if (m.tensor_parallel) return m.tensor_parallel->full_parameters();
    for (const auto& item : m.local->named_parameters()) {
      out.insert(item.key(), item.value().detach().clone());
    }
    return out;
  }
  const auto [first, last] = m.pipeline->layer_range();
  if (m.tensor_parallel) {  // this stage's layers, gathered over tp
    std::map<std::string, int> layer;
    for (const auto& e : m.entries) layer[e.name] = e.layer;
    out = m.tensor_parallel->full_parameters([&, first = first, last = last](const std::string& n) {
      return layer.at(n) >= first && layer.at(n) < last;
    });
  }
  // Each stage contributes the layers it trains; zeros elsewhere; one sum.
  std::vector<at::Tensor> flat;
  for (const auto& e : m.entries) {
    const bool mine = e.layer >= first && e.layer < last;
    const at::Tensor* found = out.find(e.name);
    const at::Tensor t = m.tensor_parallel ? (found ? *found : at::Tensor()) : e.mine;
    TANDEM_CHECK(!mine || t.defined(), "MeshModel: stage {} holds no '{}'", m.pipe->rank(), e.name);
    flat.push_back(mine ? t.detach().reshape({-1}).to(at::kDouble)
                        : at::zeros({c10::multiply_integers(e.shape)}, at::kDouble));
  }
  at::Tensor all = at::cat(flat);
  m.pipe->all_reduce(all);
  torch::OrderedDict<std::string, at::Tensor> whole;
  int64_t offset = 0;
  for (const auto& e : m.entries) {
    const int64_t n = c10::multiply_integers(e.shape);
    whole.insert(e.name, all.narrow(0, offset, n).view(e.shape).to(e.dtype));
    offset += n;
  }
  return whole;
}

memory::MemoryAccounting MeshModel::memory() const { return impl_->strategy->memory(); }

int MeshModel::max_in_flight() const { return impl_->last.max_in_flight; }

double MeshModel::bubble() const {
  const auto& s = impl_->last;
  return s.step_seconds > 0 ? 1.0 - s.compute_seconds / s.step_seconds : 0.0;
}

std::string MeshModel::describe() const {
  const Impl& m = *impl_;
  std::string s = m.shape.describe();
  if (m.pipeline) {
    const auto [first, last] = m.pipeline->layer_range();
    s += fmt::format(" ({}, {} micro-batches{}); stage 0 holds layers [{}, {})",
                     name_of(m.options.mesh.schedule), m.options.mesh.micro_batches,
                     m.options.mesh.recompute ? ", recomputed" : "", first, last);
  } else if (m.tensor_parallel) {
    s += fmt::format(" (gpt-mini split {} ways: heads, MLP features, vocabulary)", m.shape.tp);
  }
  if (m.pipeline && m.tensor_parallel) {
    s += fmt::format(", each stage split {} ways", m.shape.tp);
  }
  return s;
}

}  // namespace tandem::train
