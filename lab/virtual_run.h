// The virtual workers' machinery, private to lab/: a worker, the run that
// steps workers in the trainer's order, counts and evaluates, the event
// queue of the asynchronous strategies, and the runner of each strategy
// (virtual_workers.cpp: ddp and local-sgd; virtual_async.cpp: ps, easgd
// and gossip). Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <memory>
#include <queue>
#include <tuple>
#include <vector>

#include "lab/virtual_workers.h"
#include "tandem/parallel/async/update_rules.h"

namespace tandem::lab::detail {

using parallel::copy_into;
using parallel::flat_gradients;
using parallel::flat_of;
using sim::LinkOp;

inline std::vector<at::Tensor> clones(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const auto& t : ts) out.push_back(t.detach().clone());
  return out;
}

// One worker: its model, optimizer, clock and local step count.
struct Worker {
  std::shared_ptr<torch::nn::Module> model;
  std::vector<at::Tensor> params;
  std::unique_ptr<torch::optim::Optimizer> opt;
  int64_t steps = 0;
  double weight = 1;  // gossip's push-sum weight
};

// The simulated run: the workers, the clock, the evaluations.
class Run {
 public:
  Run(const VirtualProblem& p, const VirtualOptions& o) : p_(p), o_(o) {
    eval_model_ = p_.make_model();
    eval_params_ = eval_model_->parameters();
  }

  Worker make_worker(bool with_optimizer) {
    Worker w;
    w.model = p_.make_model();
    w.params = w.model->parameters();
    if (with_optimizer) w.opt = p_.make_optimizer(w.params);
    return w;
  }

  // set_lr, zero_grad, forward and loss, backward (and, with `step`, clip
  // and step), as Strategy::train_step does; returns the loss.
  double local_step(Worker& w, int index, bool step) {
    if (w.opt) p_.set_lr(*w.opt, p_.lr(w.steps));
    zero_grad(w.params);
    const train::Batch batch = p_.batch(index, o_.workers, w.steps);
    samples_ += batch.input.size(0);
    at::Tensor loss = p_.loss(*w.model, batch);
    loss.backward();
    if (step) {
      if (p_.clip_grad_norm > 0) torch::nn::utils::clip_grad_norm_(w.params, p_.clip_grad_norm);
      w.opt->step();
    }
    ++w.steps;
    ++steps_;
    const double value = loss.item<double>();
    if (index == 0) worker0_losses_.push_back(value);
    return value;
  }

  void note_worker0_loss(double loss) { worker0_losses_.push_back(loss); }

  // With target_on_worker0: whether worker 0's last 10 losses average at
  // or below the target, at `now` (the end of its step).
  bool worker0_reached(double now) {
    if (!o_.target_on_worker0 || o_.target_loss <= 0 || worker0_losses_.size() < kWindow) {
      return false;
    }
    double sum = 0;
    for (size_t i = worker0_losses_.size() - kWindow; i < worker0_losses_.size(); ++i) {
      sum += worker0_losses_[i];
    }
    if (sum / kWindow > o_.target_loss) return false;
    r_.reached = true;
    r_.time_s = now;
    r_.final_loss = sum / kWindow;
    return true;
  }

  static void zero_grad(const std::vector<at::Tensor>& params) {
    for (const auto& t : params) {
      at::Tensor p = t;
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
  }

  double compute_s(int worker, bool with_optimizer) {
    if (!o_.times) return 1.0;
    return with_optimizer ? o_.times->local_step_s(worker) : o_.times->gradient_s(worker);
  }
  double message_s(double bytes, int from, int to) const {
    if (!o_.times) return 0.0;
    const int first = std::min(from, to);
    return o_.times->op_s(LinkOp::kSendRecv, bytes, std::abs(to - from) + 1, first);
  }

  // After every `workers` local steps: evaluate `consensus` (flat
  // parameters) at `now`. Returns true when the run should stop.
  bool maybe_evaluate(double now, const std::function<at::Tensor()>& consensus) {
    const int64_t rounds = steps_ / o_.workers;
    if (rounds == last_round_ || rounds % o_.eval_every != 0) return false;
    last_round_ = rounds;
    return evaluate(now, rounds, consensus());
  }
  // The model whose buffers (BatchNorm's running statistics) the
  // consensus model evaluates with: worker 0's.
  void set_buffers_source(const torch::nn::Module* m) { buffers_source_ = m; }

  bool evaluate(double now, int64_t rounds, const at::Tensor& flat) {
    copy_into(flat, eval_params_);
    if (buffers_source_) {
      at::NoGradGuard no_grad;
      const auto from = buffers_source_->buffers();
      auto to = eval_model_->buffers();
      for (size_t i = 0; i < to.size(); ++i) to[i].copy_(from[i]);
    }
    const double loss = p_.eval_loss(*eval_model_);
    r_.curve.push_back({now, rounds, loss});
    if (r_.reached) return true;
    r_.final_loss = loss;
    r_.time_s = now;
    r_.reached = !o_.target_on_worker0 && o_.target_loss > 0 && loss <= o_.target_loss;
    return r_.reached;
  }

  VirtualResult finish(double now, const at::Tensor& flat) {
    if (!r_.reached && (r_.curve.empty() || r_.curve.back().rounds != steps_ / o_.workers)) {
      evaluate(now, steps_ / o_.workers, flat);
    }
    if (!r_.reached) r_.time_s = now;
    r_.steps = steps_;
    r_.samples = samples_;
    copy_into(flat, eval_params_);
    r_.parameters = clones(eval_params_);
    return std::move(r_);
  }

  // Local steps taken outside local_step() (the synchronous mode's) and their samples.
  void add_steps(int64_t n, int64_t samples) {
    steps_ += n;
    samples_ += samples;
  }
  VirtualResult& result() { return r_; }
  const VirtualProblem& problem() const { return p_; }

 private:
  const VirtualProblem& p_;
  const VirtualOptions& o_;
  std::shared_ptr<torch::nn::Module> eval_model_;
  std::vector<at::Tensor> eval_params_;
  const torch::nn::Module* buffers_source_ = nullptr;
  static constexpr size_t kWindow = 10;
  int64_t steps_ = 0;
  int64_t samples_ = 0;
  int64_t last_round_ = 0;
  std::vector<double> worker0_losses_;
  VirtualResult r_;
};

// The events of the asynchronous strategies, in time order (ties: first
// scheduled first).
enum class Kind { kStepDone, kArrive, kReply, kMix };
struct Event {
  double time;
  int64_t seq;
  Kind kind;
  int worker;
  bool operator>(const Event& e) const { return std::tie(time, seq) > std::tie(e.time, e.seq); }
};

class Events {
 public:
  void push(double time, Kind kind, int worker) { q_.push({time, seq_++, kind, worker}); }
  bool empty() const { return q_.empty(); }
  Event pop() {
    Event e = q_.top();
    q_.pop();
    return e;
  }

 private:
  std::priority_queue<Event, std::vector<Event>, std::greater<>> q_;
  int64_t seq_ = 0;
};

// Handles the events in time order until none is left, worker 0 meets the
// target, or `handle` returns true (the run should stop); returns the time
// of the last event.
template <typename Handle>
double run_events(Events& ev, Run& run, Handle&& handle) {
  double now = 0;
  while (!ev.empty()) {
    const Event e = ev.pop();
    now = e.time;
    if (e.kind == Kind::kStepDone && e.worker == 0 && run.worker0_reached(now)) break;
    if (handle(e)) break;
  }
  return now;
}

VirtualResult run_sync(Run& run, const VirtualOptions& o);       // ddp
VirtualResult run_local_sgd(Run& run, const VirtualOptions& o);  // local-sgd
VirtualResult run_server(Run& run, const VirtualOptions& o);     // ps and easgd
VirtualResult run_gossip(Run& run, const VirtualOptions& o);     // gossip

}  // namespace tandem::lab::detail
