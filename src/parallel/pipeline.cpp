#include "tandem/parallel/pipeline.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/tensor.h>
#include <fmt/format.h>

#include "tandem/core/check.h"

namespace tandem::parallel {
namespace {

// Tags: a tensor's header (ndim, dtype, sizes) and its data, per direction.
constexpr int kForwardHeader = 8100, kForwardData = 8101;
constexpr int kBackwardHeader = 8102, kBackwardData = 8103;
constexpr int64_t kMaxDims = 8;

}  // namespace

Pipeline::Pipeline(torch::nn::Sequential model, std::shared_ptr<Communicator> comm,
                   PipelineOptions options)
    : comm_(std::move(comm)), options_(std::move(options)) {
  TANDEM_CHECK(comm_ != nullptr, "Pipeline: the communicator is null");
  TANDEM_CHECK(options_.micro_batches >= 1, "Pipeline: micro_batches must be >= 1 (got {})",
               options_.micro_batches);
  const int layers = static_cast<int>(model->size());
  std::vector<int> cuts = options_.cut_points;
  if (cuts.empty()) {
    std::vector<int64_t> numel;
    for (const auto& layer : model->children()) {
      int64_t n = 0;
      for (const auto& p : layer->parameters()) n += p.numel();
      numel.push_back(n);
    }
    cuts = balanced_cut_points(numel, comm_->size());
  }
  TANDEM_CHECK(static_cast<int>(cuts.size()) == comm_->size() && cuts[0] == 0,
               "Pipeline: {} cut points for {} stages; give one per stage, the first 0",
               cuts.size(), comm_->size());
  for (size_t i = 1; i < cuts.size(); ++i) {
    TANDEM_CHECK(cuts[i] > cuts[i - 1] && cuts[i] < layers,
                 "Pipeline: cut points must increase within the model's {} layers (got {} after "
                 "{})",
                 layers, cuts[i], cuts[i - 1]);
  }
  const auto s = static_cast<size_t>(comm_->rank());
  first_layer_ = cuts[s];
  last_layer_ = s + 1 < cuts.size() ? cuts[s + 1] : layers;
  for (int l = first_layer_; l < last_layer_; ++l) stage_->push_back(*(model->begin() + l));
}

void Pipeline::send_tensor(const at::Tensor& t, int peer, int tag) {
  TANDEM_CHECK(t.dim() <= kMaxDims, "Pipeline: activations of {} dimensions (at most {})",
               t.dim(), kMaxDims);
  at::Tensor header = at::empty({kMaxDims + 2}, at::kLong);
  auto* h = header.data_ptr<int64_t>();
  h[0] = t.dim();
  h[1] = static_cast<int64_t>(t.scalar_type());
  for (int64_t d = 0; d < t.dim(); ++d) h[2 + d] = t.size(d);
  at::Tensor data = t.detach().contiguous();
  sends_.push_back({comm_->send_async(header, peer, tag), header});
  sends_.push_back({comm_->send_async(data, peer, tag + 1), data});
}

// Drops the sends that completed, and with them the last reference to
// their activations: holding every micro-batch's output until the end of
// the step would cost 1F1B its memory advantage.
void Pipeline::release_sent() {
  std::erase_if(sends_, [](const PendingSend& s) { return s.work->is_completed(); });
}

at::Tensor Pipeline::recv_tensor(int peer, int tag) {
  at::Tensor header = at::empty({kMaxDims + 2}, at::kLong);
  comm_->recv(header, peer, tag);
  const auto* h = header.data_ptr<int64_t>();
  std::vector<int64_t> sizes(h + 2, h + 2 + h[0]);
  at::Tensor data = at::empty(sizes, at::TensorOptions().dtype(static_cast<at::ScalarType>(h[1])));
  comm_->recv(data, peer, tag + 1);
  return data;
}

void Pipeline::forward(int mb, const std::vector<at::Tensor>& inputs,
                       const std::vector<at::Tensor>& targets, const PipelineLoss& loss) {
  const bool first = stage() == 0, last = stage() == stages() - 1;
  at::Tensor x = first ? inputs[static_cast<size_t>(mb)]
                       : recv_tensor(stage() - 1, kForwardHeader).requires_grad_(true);
  stage_inputs_[static_cast<size_t>(mb)] = x;
  at::Tensor y = stage_->forward(x);
  if (last) {
    at::Tensor l = loss(y, targets[static_cast<size_t>(mb)]) / options_.micro_batches;
    loss_sum_ += l.item<double>();
    stage_outputs_[static_cast<size_t>(mb)] = l;
  } else {
    send_tensor(y, stage() + 1, kForwardHeader);
    stage_outputs_[static_cast<size_t>(mb)] = y;
  }
}

void Pipeline::backward(int mb) {
  const bool first = stage() == 0, last = stage() == stages() - 1;
  at::Tensor& out = stage_outputs_[static_cast<size_t>(mb)];
  if (last) {
    out.backward();
  } else {
    at::Tensor grad = recv_tensor(stage() + 1, kBackwardHeader);
    out.backward(grad);
  }
  out = at::Tensor();  // frees this micro-batch's activations
  at::Tensor& in = stage_inputs_[static_cast<size_t>(mb)];
  if (!first) send_tensor(in.grad(), stage() - 1, kBackwardHeader);
  in = at::Tensor();
}

PipelineStepStats Pipeline::train_step(const at::Tensor& input, const at::Tensor& target,
                                       const PipelineLoss& loss) {
  const int m = options_.micro_batches;
  const bool first = stage() == 0, last = stage() == stages() - 1;
  std::vector<at::Tensor> inputs, targets;
  if (first) {
    TANDEM_CHECK(input.defined() && input.size(0) % m == 0,
                 "Pipeline: the batch of {} samples does not split into {} micro-batches",
                 input.defined() ? input.size(0) : 0, m);
    inputs = input.chunk(m);
  }
  if (last) {
    TANDEM_CHECK(target.defined() && target.size(0) % m == 0,
                 "Pipeline: the targets ({} samples) do not split into {} micro-batches",
                 target.defined() ? target.size(0) : 0, m);
    targets = target.chunk(m);
  }
  stage_inputs_.assign(static_cast<size_t>(m), at::Tensor());
  stage_outputs_.assign(static_cast<size_t>(m), at::Tensor());
  loss_sum_ = 0;
  const auto actions = pipeline_schedule(options_.schedule, stage(), stages(), m);
  for (const auto& a : actions) {
    if (a.forward) {
      forward(a.micro_batch, inputs, targets, loss);
    } else {
      backward(a.micro_batch);
    }
    release_sent();
  }
  for (auto& s : sends_) s.work->wait(comm_->timeout());
  sends_.clear();
  // Every stage learns the loss (the last stage's sum) by one broadcast.
  at::Tensor l = at::tensor({loss_sum_}, at::kDouble);
  comm_->broadcast(l, stages() - 1);
  return PipelineStepStats{l.item<double>(), max_in_flight(actions)};
}

}  // namespace tandem::parallel
