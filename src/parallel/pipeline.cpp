#include "tandem/parallel/pipeline.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include <chrono>
#include <mutex>

#include "tandem/core/check.h"

namespace tandem::parallel {
namespace {

// Tags: a tensor's header (ndim, dtype, sizes), per direction; its data
// goes on the tag after.
constexpr int kForwardHeader = 8100;
constexpr int kBackwardHeader = 8102;
constexpr int64_t kMaxDims = 8;

at::Tensor cpu_rng_state() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_cpu_rng_state(const at::Tensor& state) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace

namespace {

std::shared_ptr<Communicator> checked(std::shared_ptr<Communicator> comm) {
  TANDEM_CHECK(comm != nullptr, "Pipeline: the communicator is null");
  return comm;
}

std::vector<int64_t> layer_counts(const std::vector<torch::nn::Sequential>& stages) {
  std::vector<int64_t> counts;
  for (const auto& s : stages) counts.push_back(static_cast<int64_t>(s->size()));
  return counts;
}

// `model` cut into `stages` stages at `cuts` (empty: balanced by parameter count).
std::vector<torch::nn::Sequential> cut_model(const torch::nn::Sequential& model, int stages,
                                             std::vector<int> cuts) {
  const int layers = static_cast<int>(model->size());
  if (cuts.empty()) {
    std::vector<int64_t> numel;
    for (const auto& layer : model->children()) {
      int64_t n = 0;
      for (const auto& p : layer->parameters()) n += p.numel();
      numel.push_back(n);
    }
    cuts = balanced_cut_points(numel, stages);
  }
  TANDEM_CHECK(static_cast<int>(cuts.size()) == stages && cuts[0] == 0,
               "Pipeline: {} cut points for {} stages; give one per stage, the first 0",
               cuts.size(), stages);
  for (size_t i = 1; i < cuts.size(); ++i) {
    TANDEM_CHECK(cuts[i] > cuts[i - 1] && cuts[i] < layers,
                 "Pipeline: cut points must increase within the model's {} layers (got {} after "
                 "{})",
                 layers, cuts[i], cuts[i - 1]);
  }
  std::vector<torch::nn::Sequential> out(cuts.size());
  for (size_t s = 0; s < cuts.size(); ++s) {
    const int end = s + 1 < cuts.size() ? cuts[s + 1] : layers;
    for (int l = cuts[s]; l < end; ++l) out[s]->push_back(*(model->begin() + l));
  }
  return out;
}

// The options once the model is cut at options.cut_points.
PipelineOptions cut_points_used(PipelineOptions options) {
  options.cut_points.clear();
  return options;
}

// Stages given already cut take no cut points.
PipelineOptions without_cut_points(PipelineOptions options) {
  TANDEM_CHECK(options.cut_points.empty(),
               "Pipeline: cut_points cut a whole model; stages given one by one are the cut");
  return options;
}

}  // namespace

Pipeline::Pipeline(torch::nn::Sequential model, std::shared_ptr<Communicator> comm,
                   const PipelineOptions& options)
    : Pipeline(cut_model(model, checked(comm)->size(), options.cut_points), comm,
               cut_points_used(options)) {}

Pipeline::Pipeline(const std::vector<torch::nn::Sequential>& stages,
                   std::shared_ptr<Communicator> comm, PipelineOptions options)
    : Pipeline(static_cast<int>(stages.size()) == checked(comm)->size()
                   ? stages[static_cast<size_t>(comm->rank())]
                   : torch::nn::Sequential(),
               layer_counts(stages), comm, without_cut_points(std::move(options))) {}

Pipeline Pipeline::from_stage(torch::nn::Sequential stage, std::shared_ptr<Communicator> comm,
                              PipelineOptions options) {
  checked(comm);
  options = without_cut_points(std::move(options));
  at::Tensor mine = at::tensor({static_cast<int64_t>(stage->size())}, at::kLong);
  at::Tensor all = at::empty({comm->size()}, at::kLong);
  comm->all_gather(all, mine);
  std::vector<int64_t> sizes(all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + comm->size());
  return Pipeline(std::move(stage), sizes, std::move(comm), std::move(options));
}

Pipeline::Pipeline(torch::nn::Sequential stage, const std::vector<int64_t>& stage_layers,
                   std::shared_ptr<Communicator> comm, PipelineOptions options)
    : comm_(checked(std::move(comm))), options_(std::move(options)), stage_(std::move(stage)) {
  TANDEM_CHECK(options_.micro_batches >= 1, "Pipeline: micro_batches must be >= 1 (got {})",
               options_.micro_batches);
  TANDEM_CHECK(static_cast<int>(stage_layers.size()) == comm_->size(),
               "Pipeline: {} stages for {} ranks; give one stage per rank", stage_layers.size(),
               comm_->size());
  for (size_t s = 0; s < stage_layers.size(); ++s) {
    TANDEM_CHECK(stage_layers[s] >= 1, "Pipeline: stage {} has no layers", s);
    if (static_cast<int>(s) < comm_->rank()) first_layer_ += static_cast<int>(stage_layers[s]);
  }
  last_layer_ = first_layer_ + static_cast<int>(stage_->size());
}

// The first tensor of a step in each direction is preceded by a header
// (ndim, dtype, sizes); the micro-batches are equal chunks, so the rest of
// the step's tensors that way have its shape and go without one.
void Pipeline::send_tensor(const at::Tensor& t, int peer, int tag) {
  TANDEM_CHECK(t.dim() <= kMaxDims, "Pipeline: activations of {} dimensions (at most {})", t.dim(),
               kMaxDims);
  at::Tensor header = at::zeros({kMaxDims + 2}, at::kLong);
  auto* h = header.data_ptr<int64_t>();
  h[0] = t.dim();
  h[1] = static_cast<int64_t>(t.scalar_type());
  for (int64_t d = 0; d < t.dim(); ++d) h[2 + d] = t.size(d);
  auto [sent, first] = sent_headers_.emplace(tag, header);
  if (first) {
    sends_.push_back({comm_->send_async(header, peer, tag), header});
  } else {
    TANDEM_CHECK(at::equal(sent->second, header),
                 "Pipeline: stage {} sent tensors of different shapes or dtypes in one step; "
                 "every micro-batch must give its stage's output the same shape",
                 stage());
  }
  at::Tensor data = t.detach().contiguous();
  sends_.push_back({comm_->send_async(data, peer, tag + 1), data});
}

// Drops the sends that completed, and with them the last reference to
// their activations: holding every micro-batch's output until the end of
// the step would cost 1F1B its memory advantage.
void Pipeline::release_sent() {
  std::erase_if(sends_, [](const PendingSend& s) { return s.work->is_completed(); });
}

at::Tensor Pipeline::recv_tensor(int peer, int tag) {
  at::Tensor& header = received_headers_[tag];
  if (!header.defined()) {
    header = at::empty({kMaxDims + 2}, at::kLong);
    comm_->recv(header, peer, tag);
  }
  const auto* h = header.data_ptr<int64_t>();
  std::vector<int64_t> sizes(h + 2, h + 2 + h[0]);
  at::Tensor data = at::empty(sizes, at::TensorOptions().dtype(static_cast<at::ScalarType>(h[1])));
  comm_->recv(data, peer, tag + 1);
  return data;
}

void Pipeline::span(const std::string& name, const char* lane, TraceRecorder::TimePoint start) {
  if (options_.trace) options_.trace->span(name, lane, start, std::chrono::steady_clock::now());
}

at::Tensor Pipeline::receive_input(int mb, const std::vector<at::Tensor>& inputs) {
  if (stage() == 0) return inputs[static_cast<size_t>(mb)];
  const auto t0 = std::chrono::steady_clock::now();
  at::Tensor x = recv_tensor(stage() - 1, kForwardHeader);
  span("wait", "comm", t0);
  return x;
}

at::Tensor Pipeline::run_stage(int mb, const at::Tensor& x) {
  at::Tensor y = stage_->forward(x);
  if (stage() != stages() - 1) return y;
  return (*loss_)(y, targets_[static_cast<size_t>(mb)]) / options_.micro_batches;
}

void Pipeline::forward(int mb, const std::vector<at::Tensor>& inputs) {
  const auto i = static_cast<size_t>(mb);
  at::Tensor x = receive_input(mb, inputs);
  const auto t0 = std::chrono::steady_clock::now();
  at::Tensor y;
  if (options_.recompute) {
    // Keep the input and the RNG state; the activations die with the guard.
    rng_states_[i] = cpu_rng_state();
    at::NoGradGuard no_grad;
    y = run_stage(mb, x);
  } else {
    if (stage() > 0) x.requires_grad_(true);
    y = run_stage(mb, x);
  }
  compute_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  span(fmt::format("F{}", mb), "stage", t0);
  stage_inputs_[i] = x;
  if (stage() == stages() - 1) {
    loss_sum_ += y.item<double>();
  } else {
    send_tensor(y, stage() + 1, kForwardHeader);
  }
  if (!options_.recompute) stage_outputs_[i] = y;
}

void Pipeline::backward(int mb, bool last_backward) {
  const auto i = static_cast<size_t>(mb);
  const bool first = stage() == 0, last = stage() == stages() - 1;
  at::Tensor grad;
  if (!last) {
    const auto t0 = std::chrono::steady_clock::now();
    grad = recv_tensor(stage() + 1, kBackwardHeader);
    span("wait", "comm", t0);
  }
  const auto t0 = std::chrono::steady_clock::now();
  at::Tensor& in = stage_inputs_[i];
  at::Tensor& out = stage_outputs_[i];
  if (options_.recompute) {
    // The same forward again, now recording the graph, with the RNG as it was.
    const at::Tensor now = cpu_rng_state();
    set_cpu_rng_state(rng_states_[i]);
    if (!first) in.requires_grad_(true);
    out = run_stage(mb, in);
    set_cpu_rng_state(now);
    rng_states_[i] = at::Tensor();
    span(fmt::format("R{}", mb), "stage", t0);
  }
  const auto t1 = std::chrono::steady_clock::now();
  auto run = [&] {
    if (last) {
      out.backward();
    } else {
      out.backward(grad);
    }
  };
  if (options_.wrap_backward) {
    options_.wrap_backward(last_backward, run);
  } else {
    run();
  }
  compute_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  span(fmt::format("B{}", mb), "stage", t1);
  out = at::Tensor();  // frees this micro-batch's activations
  if (!first) send_tensor(in.grad(), stage() - 1, kBackwardHeader);
  in = at::Tensor();
}

void Pipeline::finish_sends() {
  for (auto& s : sends_) s.work->wait(comm_->timeout());
  sends_.clear();
}

std::vector<at::Tensor> Pipeline::split(const at::Tensor& t, bool needed, const char* what) const {
  if (!needed) return {};
  const int m = options_.micro_batches;
  TANDEM_CHECK(t.defined() && t.size(0) % m == 0,
               "Pipeline: the {} ({} samples) do not split into {} micro-batches", what,
               t.defined() ? t.size(0) : 0, m);
  return t.chunk(m);
}

PipelineStepStats Pipeline::train_step(const at::Tensor& input, const at::Tensor& target,
                                       const PipelineLoss& loss) {
  const auto start = std::chrono::steady_clock::now();
  const int m = options_.micro_batches;
  std::vector<at::Tensor> inputs = split(input, stage() == 0, "inputs");
  targets_ = split(target, stage() == stages() - 1, "targets");
  loss_ = &loss;
  stage_inputs_.assign(static_cast<size_t>(m), at::Tensor());
  stage_outputs_.assign(static_cast<size_t>(m), at::Tensor());
  rng_states_.assign(static_cast<size_t>(m), at::Tensor());
  loss_sum_ = 0;
  compute_seconds_ = 0;
  sent_headers_.clear();
  received_headers_.clear();
  const auto actions = pipeline_schedule(options_.schedule, stage(), stages(), m);
  for (size_t a = 0; a < actions.size(); ++a) {
    if (actions[a].forward) {
      forward(actions[a].micro_batch, inputs);
    } else {
      backward(actions[a].micro_batch, a + 1 == actions.size());
    }
    release_sent();
  }
  finish_sends();
  targets_.clear();
  loss_ = nullptr;
  // Every stage learns the loss (the last stage's sum) by one broadcast.
  at::Tensor l = at::tensor({loss_sum_}, at::kDouble);
  comm_->broadcast(l, stages() - 1);
  PipelineStepStats stats{l.item<double>(), max_in_flight(actions)};
  stats.step_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stats.compute_seconds = compute_seconds_;
  return stats;
}

at::Tensor Pipeline::forward_only(const at::Tensor& input, const at::Tensor& target,
                                  const PipelineMetric& metric) {
  TANDEM_CHECK(metric.size >= 1 && metric.fn, "Pipeline::forward_only: give a metric of size >= 1");
  const bool last = stage() == stages() - 1;
  std::vector<at::Tensor> inputs = split(input, stage() == 0, "inputs");
  std::vector<at::Tensor> targets = split(target, last, "targets");
  at::Tensor sums = at::zeros({metric.size}, at::kDouble);
  sent_headers_.clear();
  received_headers_.clear();
  {
    at::NoGradGuard no_grad;
    for (int mb = 0; mb < options_.micro_batches; ++mb) {
      at::Tensor y = stage_->forward(receive_input(mb, inputs));
      if (last) {
        sums += metric.fn(y, targets[static_cast<size_t>(mb)]).to(at::kDouble).reshape({-1});
      } else {
        send_tensor(y, stage() + 1, kForwardHeader);
      }
      release_sent();
    }
  }
  finish_sends();
  comm_->broadcast(sums, stages() - 1);
  return sums;
}

}  // namespace tandem::parallel
