// clang-format off
// First, before the headers below include ATen/record_function.h: see there.
#include "src/memory/record_function.h"
// clang-format on

#include "lab/profile_compute.h"

#include <ATen/Parallel.h>
#include <c10/core/StorageImpl.h>
#include <fmt/format.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "bench/training_steps.h"
#include "tandem/core/check.h"
#include "tandem/core/trace.h"
#include "tandem/train/options.h"
#include "tandem/train/strategy.h"

namespace tandem::lab {
namespace {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
constexpr TimePoint kNever = TimePoint::max();

double seconds_between(TimePoint a, TimePoint b) {
  return std::chrono::duration<double>(b - a).count();
}

// Note [Layer spans]: LibTorch's C++ modules have no forward hooks, so a
// layer's forward is found from the operators: a RecordFunction callback sees
// each operator's inputs, and the first operator to read a layer's parameter
// or buffer starts that layer. The layer's span runs until the next layer
// starts (the last one's until forward returns), so the activation and
// pooling between two modules count to the earlier, and what runs before the
// first layer (a flatten) counts to the first. A parameter used again later
// (shared weights) is attributed to its first use only. Backward has
// gradient hooks: a layer is done when the last of its parameters' gradients
// is computed, and its backward is the gap since the layer done before it
// (the first from the start of backward, so it includes the loss's
// gradient). The forward spans tile the forward pass exactly; what follows
// the last gradient until backward returns goes to other_s with the loss,
// zero_grad and the gaps between phases.

struct Layer {
  std::string name;
  std::vector<at::Tensor> params = {};  // those no earlier layer owns
  std::vector<at::Tensor> buffers = {};
  int64_t param_bytes = 0;
};

std::vector<Layer> find_layers(torch::nn::Module& model) {
  std::unordered_set<const c10::TensorImpl*> seen;
  std::vector<Layer> layers;
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    Layer layer{.name = item.key().empty() ? "(model)" : item.key()};
    for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) {
      if (!seen.insert(p.value().unsafeGetTensorImpl()).second) continue;
      layer.param_bytes += static_cast<int64_t>(p.value().nbytes());
      layer.params.push_back(p.value());
    }
    if (layer.params.empty()) continue;
    for (const auto& b : item.value()->named_buffers(/*recurse=*/false)) {
      if (b.value().defined()) layer.buffers.push_back(b.value());
    }
    layers.push_back(std::move(layer));
  }
  return layers;
}

using Owners = std::unordered_map<const c10::StorageImpl*, int>;

// Which layer owns each parameter and buffer storage.
Owners storage_owners(const std::vector<Layer>& layers) {
  Owners owners;
  for (size_t i = 0; i < layers.size(); ++i) {
    for (const auto* group : {&layers[i].params, &layers[i].buffers}) {
      for (const at::Tensor& t : *group) {
        if (t.has_storage()) owners.try_emplace(t.storage().unsafeGetStorageImpl(), int(i));
      }
    }
  }
  return owners;
}

// What one forward pass showed, per layer index.
struct ForwardMarks {
  std::vector<TimePoint> first_op;  // kNever: not reached
  std::vector<int64_t> output_bytes;
  std::vector<int64_t> activation_bytes;
};

// The operators of one forward pass on this thread (see Note [Layer spans]).
// Storages are kept by weak reference, so an address cannot be reused by
// another storage while it is watched, and finish() can tell which survived.
struct ForwardState {
  const Owners* owners = nullptr;
  const c10::StorageImpl* input = nullptr;  // the batch's
  int current = -1;                         // the layer whose span runs; -1 before the first
  ForwardMarks marks;
  struct Created {
    int layer;
    c10::weak_intrusive_ptr<c10::StorageImpl> weak;
  };
  std::unordered_map<const c10::StorageImpl*, Created> created;

  void on_inputs(c10::ArrayRef<const c10::IValue> inputs) {
    for (const c10::IValue& v : inputs) {
      memory::detail::for_each_stored_tensor(v, [this](const at::Tensor& t) {
        auto it = owners->find(t.storage().unsafeGetStorageImpl());
        if (it == owners->end() || marks.first_op[it->second] != kNever) return;
        marks.first_op[it->second] = Clock::now();
        current = it->second;
      });
    }
  }
  void on_outputs(const std::vector<c10::IValue>& outputs) {
    bool first = true;
    for (const c10::IValue& v : outputs) {
      memory::detail::for_each_stored_tensor(v, [&](const at::Tensor& t) {
        c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
        // A view of a parameter, or the batch (made before forward).
        if (owners->count(impl) > 0 || impl == input) return;
        created.try_emplace(impl, Created{current, t.storage().getWeakStorageImpl()});
        if (first && current >= 0) marks.output_bytes[current] = int64_t(t.nbytes());
        first = false;
      });
    }
  }
};

thread_local ForwardState* t_forward = nullptr;

std::unique_ptr<at::ObserverContext> on_op_start(const at::RecordFunction& fn) {
  if (t_forward != nullptr) t_forward->on_inputs(fn.inputs());
  return nullptr;
}

void on_op_end(const at::RecordFunction& fn, at::ObserverContext*) {
  if (t_forward != nullptr) t_forward->on_outputs(fn.outputs());
}

// Watches the operators of this thread from construction to finish().
class ForwardWatch {
 public:
  ForwardWatch(const Owners& owners, size_t layers, const at::Tensor& input) {
    TANDEM_CHECK(t_forward == nullptr, "profile: this thread watches a forward pass already");
    state_.owners = &owners;
    state_.input = input.storage().unsafeGetStorageImpl();
    state_.marks.first_op.assign(layers, kNever);
    state_.marks.output_bytes.assign(layers, 0);
    state_.marks.activation_bytes.assign(layers, 0);
    t_forward = &state_;
    handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(on_op_start, on_op_end)
                                             .needsInputs(true)
                                             .needsOutputs(true)
                                             .scopes({at::RecordScope::FUNCTION}));
  }
  ~ForwardWatch() { stop(); }
  ForwardWatch(const ForwardWatch&) = delete;
  ForwardWatch& operator=(const ForwardWatch&) = delete;

  // Stops watching; activations are the storages made in a layer's span
  // that are still alive (saved for backward, or the output).
  ForwardMarks finish() {
    stop();
    const auto& first = state_.marks.first_op;
    const int first_layer = int(std::min_element(first.begin(), first.end()) - first.begin());
    for (const auto& [impl, c] : state_.created) {
      const int layer = c.layer >= 0 ? c.layer : first_layer;
      if (!c.weak.expired() && layer < int(first.size())) {
        state_.marks.activation_bytes[layer] += int64_t(impl->nbytes());
      }
    }
    state_.created.clear();
    return std::move(state_.marks);
  }

 private:
  void stop() {
    if (t_forward != &state_) return;
    at::removeCallback(handle_);
    t_forward = nullptr;
  }

  ForwardState state_;
  at::CallbackHandle handle_ = at::INVALID_CALLBACK_HANDLE;
};

// Gradient hooks on every layer's parameters: when each layer's last
// gradient of the step was computed.
class GradReadyHooks {
 public:
  explicit GradReadyHooks(const std::vector<Layer>& layers)
      : ready_(layers.size(), TimePoint::min()) {
    for (size_t i = 0; i < layers.size(); ++i) {
      for (const at::Tensor& p : layers[i].params) {
        if (!p.requires_grad()) continue;  // frozen: no gradient, no backward time
        const unsigned h = p.register_hook(
            [this, i](const at::Tensor&) { ready_[i] = std::max(ready_[i], Clock::now()); });
        hooks_.emplace_back(p, h);
      }
    }
  }
  ~GradReadyHooks() {
    for (auto& [p, h] : hooks_) p.remove_hook(h);
  }
  GradReadyHooks(const GradReadyHooks&) = delete;
  GradReadyHooks& operator=(const GradReadyHooks&) = delete;

  void reset() { std::fill(ready_.begin(), ready_.end(), TimePoint::min()); }
  const std::vector<TimePoint>& ready() const { return ready_; }

 private:
  std::vector<TimePoint> ready_;  // TimePoint::min(): no gradient yet
  std::vector<std::pair<at::Tensor, unsigned>> hooks_;
};

struct StepMarks {
  TimePoint start, forward_start, forward_end, backward_start, backward_end, optimizer_start,
      optimizer_end, end;
  ForwardMarks forward;
  std::vector<TimePoint> grad_ready;
};

struct Session {
  torch::nn::AnyModule model;
  std::vector<Layer> layers;
  Owners owners;
  bench::Batch batch;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
};

StepMarks run_step(Session& s, GradReadyHooks& hooks) {
  StepMarks m;
  hooks.reset();
  m.start = Clock::now();
  s.optimizer->zero_grad();
  at::Tensor logits;
  {
    ForwardWatch watch(s.owners, s.layers.size(), s.batch.input);
    m.forward_start = Clock::now();
    logits = s.model.forward(s.batch.input);
    m.forward_end = Clock::now();
    m.forward = watch.finish();
  }
  at::Tensor loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                         s.batch.target.reshape({-1}));
  m.backward_start = Clock::now();
  loss.backward();
  m.backward_end = Clock::now();
  m.grad_ready = hooks.ready();
  m.optimizer_start = Clock::now();
  s.optimizer->step();
  m.end = m.optimizer_end = Clock::now();
  return m;
}

struct Span {
  int layer;
  TimePoint start, end;
};

// The layers' forward spans in execution order (see Note [Layer spans]).
std::vector<Span> forward_spans(const StepMarks& m) {
  std::vector<Span> spans;
  for (size_t i = 0; i < m.forward.first_op.size(); ++i) {
    if (m.forward.first_op[i] != kNever) spans.push_back({int(i), m.forward.first_op[i], {}});
  }
  std::sort(spans.begin(), spans.end(), [](auto& a, auto& b) { return a.start < b.start; });
  for (size_t k = 0; k < spans.size(); ++k) {
    if (k == 0) spans[k].start = m.forward_start;
    spans[k].end = k + 1 < spans.size() ? spans[k + 1].start : m.forward_end;
  }
  return spans;
}

// The layers' backward spans in the order their gradients were done.
std::vector<Span> backward_spans(const StepMarks& m) {
  std::vector<Span> spans;
  for (size_t i = 0; i < m.grad_ready.size(); ++i) {
    if (m.grad_ready[i] != TimePoint::min()) spans.push_back({int(i), {}, m.grad_ready[i]});
  }
  std::sort(spans.begin(), spans.end(), [](auto& a, auto& b) { return a.end < b.end; });
  for (size_t k = 0; k < spans.size(); ++k) {
    spans[k].start = k == 0 ? m.backward_start : spans[k - 1].end;
  }
  return spans;
}

// One timed step, cut into the profile's parts.
struct StepCut {
  std::vector<double> forward_s, backward_s;  // per layer index
  double optimizer_s = 0, other_s = 0, step_s = 0;
};

StepCut cut_step(const StepMarks& m, const std::vector<Layer>& named, TraceRecorder* trace) {
  StepCut c{std::vector<double>(named.size(), 0.0), std::vector<double>(named.size(), 0.0)};
  double covered = 0;
  for (const Span& s : forward_spans(m)) {
    c.forward_s[s.layer] = seconds_between(s.start, s.end);
    covered += c.forward_s[s.layer];
    if (trace) trace->span(named[s.layer].name, "forward", s.start, s.end);
  }
  for (const Span& s : backward_spans(m)) {
    c.backward_s[s.layer] = seconds_between(s.start, s.end);
    covered += c.backward_s[s.layer];
    if (trace) trace->span(named[s.layer].name, "backward", s.start, s.end);
  }
  if (trace) trace->span("optimizer", "optimizer", m.optimizer_start, m.optimizer_end);
  c.optimizer_s = seconds_between(m.optimizer_start, m.optimizer_end);
  c.step_s = seconds_between(m.start, m.end);
  c.other_s = std::max(0.0, c.step_s - covered - c.optimizer_s);
  return c;
}

// Linear interpolation between the closest ranks; `v` is not empty.
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * double(v.size() - 1);
  const size_t lo = size_t(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - double(lo));
}
double median_of(const std::vector<double>& v) { return quantile(v, 0.5); }
double iqr_of(const std::vector<double>& v) { return quantile(v, 0.75) - quantile(v, 0.25); }

Session make_session(const ProfileComputeOptions& o) {
  const std::string name(train::name_of(o.model));
  Session s;
  s.model = train::make_model(o.model, o.model_options);
  s.batch = bench::random_batch(name, o.model_options, o.batch_size);
  if (o.dtype == train::Dtype::kFloat64) {
    s.model.ptr()->to(at::kDouble);
    if (s.batch.input.is_floating_point()) s.batch.input = s.batch.input.to(at::kDouble);
  }
  s.model.ptr()->train();
  s.layers = find_layers(*s.model.ptr());
  s.owners = storage_owners(s.layers);
  train::TrainerOptions trainer;
  trainer.optimizer.kind = o.optimizer;
  s.optimizer = train::make_optimizer(trainer, s.model.ptr()->parameters());
  return s;
}

// Layer indices in the forward order of `first`, then those forward never
// reached, in registration order.
std::vector<int> report_order(const StepMarks& first) {
  std::vector<int> order;
  for (const Span& s : forward_spans(first)) order.push_back(s.layer);
  for (size_t i = 0; i < first.forward.first_op.size(); ++i) {
    if (first.forward.first_op[i] == kNever) order.push_back(int(i));
  }
  return order;
}

}  // namespace

std::vector<LayerParams> parameterised_layers(torch::nn::Module& model) {
  std::vector<LayerParams> out;
  for (const Layer& l : find_layers(model)) out.push_back({l.name, l.param_bytes});
  return out;
}

std::string model_version(torch::nn::Module& model) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64-bit offset basis
  auto mix = [&h](std::string_view text) {
    for (unsigned char ch : text) h = (h ^ ch) * 1099511628211ull;
  };
  for (const auto& p : model.named_parameters()) {
    mix(fmt::format("{}:{}:{};", p.key(), fmt::join(p.value().sizes(), "x"),
                    c10::toString(p.value().scalar_type())));
  }
  return fmt::format("{:016x}", h);
}

sim::ComputeProfile profile_compute(const ProfileComputeOptions& o) {
  TANDEM_CHECK(o.batch_size >= 1, "profile: batch_size must be >= 1 (got {})", o.batch_size);
  TANDEM_CHECK(o.steps >= 1, "profile: steps must be >= 1 (got {})", o.steps);
  TANDEM_CHECK(o.warmup >= 0, "profile: warmup must be >= 0 (got {})", o.warmup);
  Session s = make_session(o);
  GradReadyHooks hooks(s.layers);
  for (int i = 0; i < o.warmup; ++i) run_step(s, hooks);
  std::vector<StepCut> cuts;
  StepMarks first, last;
  for (int i = 0; i < o.steps; ++i) {
    last = run_step(s, hooks);
    if (i == 0) first = last;
    cuts.push_back(cut_step(last, s.layers, o.trace));
  }
  auto column = [&cuts](auto pick) {
    std::vector<double> v;
    for (const StepCut& c : cuts) v.push_back(pick(c));
    return v;
  };
  sim::ComputeProfile p;
  p.model = std::string(train::name_of(o.model));
  p.model_version = model_version(*s.model.ptr());
  p.dtype = std::string(train::name_of(o.dtype));
  p.batch_size = o.batch_size;
  p.threads = at::get_num_threads();
  p.steps = o.steps;
  for (int i : report_order(first)) {
    const auto fwd = column([i](const StepCut& c) { return c.forward_s[i]; });
    const auto bwd = column([i](const StepCut& c) { return c.backward_s[i]; });
    p.layers.push_back({.name = s.layers[i].name,
                        .forward_s = median_of(fwd),
                        .backward_s = median_of(bwd),
                        .forward_spread_s = iqr_of(fwd),
                        .backward_spread_s = iqr_of(bwd),
                        .param_bytes = s.layers[i].param_bytes,
                        .grad_bytes = s.layers[i].param_bytes,
                        .activation_bytes = last.forward.activation_bytes[i],
                        .output_bytes = last.forward.output_bytes[i]});
  }
  for (const auto& b : s.model.ptr()->buffers()) p.buffer_bytes += static_cast<int64_t>(b.nbytes());
  p.optimizer_s = median_of(column([](const StepCut& c) { return c.optimizer_s; }));
  p.other_s = median_of(column([](const StepCut& c) { return c.other_s; }));
  const auto steps = column([](const StepCut& c) { return c.step_s; });
  p.step_s = median_of(steps);
  p.step_spread_s = iqr_of(steps);
  p.step_times_s = steps;
  return p;
}

}  // namespace tandem::lab
