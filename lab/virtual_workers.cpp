#include "lab/virtual_workers.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/empty_like.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <limits>
#include <queue>
#include <tuple>

#include "tandem/core/check.h"
#include "tandem/parallel/async/update_rules.h"

namespace tandem::lab {
namespace {

using parallel::copy_into;
using parallel::flat_gradients;
using parallel::flat_of;

using sim::LinkOp;

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& ts) {
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

  int64_t steps() const { return steps_; }
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

// ddp: the workers' gradients averaged, one step.
VirtualResult run_sync(Run& run, const VirtualOptions& o) {
  const VirtualProblem& p = run.problem();
  Worker w = run.make_worker(true);
  run.set_buffers_source(w.model.get());
  // Without buffers (BatchNorm's statistics are per worker) and without
  // worker 0's own loss to watch, one forward of all the batches at once.
  const bool one_batch = w.model->buffers().empty() && !o.target_on_worker0 && o.workers > 1;
  double now = 0;
  for (int64_t s = 0; s < o.max_steps; ++s) {
    p.set_lr(*w.opt, p.lr(s));
    Run::zero_grad(w.params);
    std::vector<at::Tensor> buffers;
    int64_t samples = 0;
    if (one_batch) {
      // The mean loss of the workers' batches side by side: its gradient is
      // the mean of theirs (equal batch sizes, mean losses).
      std::vector<at::Tensor> inputs, targets;
      for (int k = 0; k < o.workers; ++k) {
        const train::Batch batch = p.batch(k, o.workers, s);
        inputs.push_back(batch.input);
        targets.push_back(batch.target);
        samples += batch.input.size(0);
      }
      p.loss(*w.model, {at::cat(inputs), at::cat(targets)}).backward();
    }
    for (int k = 0; k < o.workers && !one_batch; ++k) {
      const train::Batch batch = p.batch(k, o.workers, s);
      samples += batch.input.size(0);
      at::Tensor loss = p.loss(*w.model, batch);
      loss.backward();  // the gradients add up
      if (k == 0) {
        buffers = clones(w.model->buffers());
        run.note_worker0_loss(loss.item<double>());
      }
    }
    {
      at::NoGradGuard no_grad;
      auto live = w.model->buffers();
      for (size_t i = 0; i < buffers.size(); ++i) live[i].copy_(buffers[i]);
      for (auto& t : w.params) {
        at::Tensor q = t;
        if (q.grad().defined() && !one_batch) q.mutable_grad().div_(static_cast<double>(o.workers));
      }
    }
    if (p.clip_grad_norm > 0) torch::nn::utils::clip_grad_norm_(w.params, p.clip_grad_norm);
    w.opt->step();
    run.add_steps(o.workers, samples);
    now += o.times ? o.times->sync_step_s() : 1.0;
    if (run.worker0_reached(now)) break;
    if (run.maybe_evaluate(now, [&] { return flat_of(w.params); })) break;
  }
  return run.finish(now, flat_of(w.params));
}

// The workers' floating-point buffers (BatchNorm's running statistics)
// replaced by their mean, as LocalSgd averages them with the parameters.
void average_buffers(std::vector<Worker>& ws) {
  at::NoGradGuard no_grad;
  const auto first = ws[0].model->buffers();
  for (size_t i = 0; i < first.size(); ++i) {
    if (!at::isFloatingType(first[i].scalar_type())) continue;
    at::Tensor sum = first[i].clone();
    for (size_t k = 1; k < ws.size(); ++k) sum.add_(ws[k].model->buffers()[i]);
    sum.div_(static_cast<double>(ws.size()));
    for (auto& w : ws) w.model->buffers()[i].copy_(sum);
  }
}

// local-sgd: local steps, then every sync_every a barrier and the average.
VirtualResult run_local_sgd(Run& run, const VirtualOptions& o) {
  std::vector<Worker> ws;
  for (int k = 0; k < o.workers; ++k) ws.push_back(run.make_worker(true));
  run.set_buffers_source(ws[0].model.get());
  std::vector<double> clock(o.workers, 0.0);
  auto average = [&] {
    at::Tensor sum = flat_of(ws[0].params);
    for (int k = 1; k < o.workers; ++k) sum.add_(flat_of(ws[k].params));
    return sum.div_(static_cast<double>(o.workers));
  };
  double now = 0;
  bool stop = false;
  for (int64_t s = 0; s < o.max_steps && !stop; ++s) {
    for (int k = 0; k < o.workers; ++k) {
      run.local_step(ws[k], k, true);
      clock[k] += run.compute_s(k, true);
    }
    if (run.worker0_reached(clock[0])) {
      now = clock[0];
      break;
    }
    now = *std::max_element(clock.begin(), clock.end());
    if ((s + 1) % o.sync_every == 0 && o.workers > 1) {
      now += o.times ? o.times->op_s(LinkOp::kAllReduce, o.times->param_bytes(), o.workers) : 0;
      const at::Tensor mean = average();
      for (auto& w : ws) copy_into(mean, w.params);
      average_buffers(ws);
      std::fill(clock.begin(), clock.end(), now);
    }
    stop = run.maybe_evaluate(now, average);
  }
  return run.finish(now, average());
}

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

// ps and easgd: one server (rank `workers`) holds the parameters (ps) or
// the center variable (easgd).
VirtualResult run_server(Run& run, const VirtualOptions& o) {
  const VirtualProblem& p = run.problem();
  const bool elastic = o.strategy == VirtualStrategy::kEasgd;
  std::vector<Worker> ws;
  for (int k = 0; k < o.workers; ++k) ws.push_back(run.make_worker(elastic));
  run.set_buffers_source(ws[0].model.get());
  Worker server = run.make_worker(false);
  at::Tensor center = flat_of(server.params).clone();
  std::vector<at::Tensor> leaf = {center};
  std::unique_ptr<torch::optim::Optimizer> server_opt;
  if (!elastic) server_opt = p.make_optimizer(leaf);
  const double bytes = o.times ? o.times->param_bytes() : 0;
  const double apply_s = o.times ? o.times->server_step_s() : 0;
  const int server_rank = o.workers;

  std::vector<at::Tensor> pending(o.workers);  // what each worker sent
  std::vector<double> lr_sent(o.workers, 0);
  std::vector<int64_t> clock(o.workers, 0), pulled_min(o.workers, 0), pulled_version(o.workers, 0);
  std::vector<bool> active(o.workers, true), waiting(o.workers, false);
  int64_t version = 0;
  double server_free = 0;
  Events ev;
  auto min_clock = [&] {
    int64_t low = std::numeric_limits<int64_t>::max();
    for (int k = 0; k < o.workers; ++k) {
      if (active[k]) low = std::min(low, clock[k]);
    }
    return low == std::numeric_limits<int64_t>::max() ? 0 : low;
  };
  // A worker starts a local step at `t`; easgd exchanges every tau steps.
  auto start_step = [&](int k, double t) {
    if (ws[k].steps >= o.max_steps) {
      active[k] = false;
      return;
    }
    if (elastic) {
      run.local_step(ws[k], k, true);
      ev.push(t + run.compute_s(k, true), Kind::kStepDone, k);
    } else {
      lr_sent[k] = p.lr(ws[k].steps);
      run.local_step(ws[k], k, false);
      pending[k] = flat_gradients(ws[k].params);
      ev.push(t + run.compute_s(k, false), Kind::kStepDone, k);
    }
  };
  auto reply = [&](int k, double t) {
    waiting[k] = false;
    pulled_version[k] = version;
    pulled_min[k] = min_clock();
    if (!elastic) pending[k] = center.clone();  // the fresh parameters
    ev.push(t + run.message_s(bytes, server_rank, k), Kind::kReply, k);
  };
  auto release_waiting = [&](double t) {
    for (int k = 0; k < o.workers; ++k) {
      if (waiting[k] && clock[k] - min_clock() <= o.staleness) reply(k, t);
    }
  };
  for (int k = 0; k < o.workers; ++k) start_step(k, 0);
  const double end = run_events(ev, run, [&](const Event& e) {
    const double now = e.time;
    const int k = e.worker;
    if (e.kind == Kind::kStepDone) {
      if (elastic && ws[k].steps % o.tau != 0) {
        start_step(k, now);
      } else {
        if (elastic) pending[k] = flat_of(ws[k].params);
        ev.push(now + run.message_s(bytes, k, server_rank), Kind::kArrive, k);
      }
    } else if (e.kind == Kind::kArrive) {
      const double start = std::max(now, server_free);
      server_free = start + apply_s;
      if (elastic) {
        at::Tensor move = at::empty_like(center);
        parallel::elastic_move(pending[k], center, o.alpha, move);
        center.add_(move);
        ++run.result().staleness[version - pulled_version[k]];
        pending[k] = move;
      } else {
        ++run.result().staleness[clock[k] - pulled_min[k]];
        parallel::server_step(*server_opt, center, pending[k], lr_sent[k], p.set_lr);
      }
      ++version;
      ++clock[k];
      if (!elastic && o.staleness >= 0 && clock[k] - min_clock() > o.staleness) {
        waiting[k] = true;
      } else {
        reply(k, server_free);
      }
      if (!elastic && o.staleness >= 0) release_waiting(server_free);
    } else {  // kReply
      if (elastic) {
        at::Tensor x = flat_of(ws[k].params);
        copy_into(x.sub_(pending[k]), ws[k].params);
      } else {
        copy_into(pending[k], ws[k].params);
      }
      start_step(k, now);
      if (!active[k] && !elastic && o.staleness >= 0) release_waiting(now);
    }
    return run.maybe_evaluate(now, [&] { return center.clone(); });
  });
  return run.finish(end, center);
}

// gossip: after each local step, one exchange with a random open peer.
VirtualResult run_gossip(Run& run, const VirtualOptions& o) {
  TANDEM_CHECK(o.workers >= 2, "lab converge: gossip needs at least 2 workers (got {})", o.workers);
  std::vector<Worker> ws;
  std::vector<parallel::GossipPeers> peers;
  for (int k = 0; k < o.workers; ++k) {
    ws.push_back(run.make_worker(true));
    peers.emplace_back(o.seed, k);
  }
  run.set_buffers_source(ws[0].model.get());
  const double bytes = o.times ? o.times->param_bytes() : 0;
  struct Message {
    at::Tensor x;
    double weight;
    double arrive = 0;
  };
  std::vector<std::vector<Message>> inbox(o.workers), in_flight(o.workers);
  std::vector<bool> finished(o.workers, false);
  std::vector<int> asked(o.workers, -1);
  Events ev;
  auto closed_for = [&](int k) {
    std::vector<bool> closed = finished;
    closed[k] = true;
    return closed;
  };
  auto send = [&](int from, int to, double now) {  // the time it arrives
    const double arrive = now + run.message_s(bytes, from, to);
    in_flight[to].push_back({flat_of(ws[from].params), ws[from].weight, arrive});
    ev.push(arrive, Kind::kArrive, to);
    return arrive;
  };
  auto merge = [&](int k, const Message& m) {
    ws[k].weight = parallel::push_sum_merge(ws[k].params, ws[k].weight, m.x, m.weight);
  };
  auto consensus = [&] {
    at::Tensor sum;
    double total = 0;
    auto add = [&](const at::Tensor& x, double w) {
      sum = sum.defined() ? sum.add(x, w) : x.mul(w);
      total += w;
    };
    for (int k = 0; k < o.workers; ++k) {
      add(flat_of(ws[k].params), ws[k].weight);
      for (const auto& m : inbox[k]) add(m.x, m.weight);
      for (const auto& m : in_flight[k]) add(m.x, m.weight);
    }
    return sum.div_(total);
  };
  auto start_step = [&](int k, double t) {
    if (ws[k].steps >= o.max_steps) {
      finished[k] = true;
      for (const auto& m : inbox[k]) merge(k, m);
      inbox[k].clear();
      return;
    }
    run.local_step(ws[k], k, true);
    ev.push(t + run.compute_s(k, true), Kind::kStepDone, k);
  };
  for (int k = 0; k < o.workers; ++k) start_step(k, 0);
  const double end = run_events(ev, run, [&](const Event& e) {
    const double now = e.time;
    const int k = e.worker;
    if (e.kind == Kind::kStepDone) {
      const int peer = peers[k].pick(closed_for(k));
      if (peer < 0) {
        ev.push(now, Kind::kMix, k);
      } else if (!o.gossip_pull) {
        ws[k].weight /= 2;
        ev.push(send(k, peer, now), Kind::kMix, k);
      } else {
        asked[k] = peer;
        ev.push(now + run.message_s(16, k, peer), Kind::kReply, k);  // the request reaches the peer
      }
    } else if (e.kind == Kind::kArrive) {
      auto& f = in_flight[k];
      for (auto it = f.begin(); it != f.end();) {
        if (it->arrive <= now) {
          inbox[k].push_back(std::move(*it));
          it = f.erase(it);
        } else {
          ++it;
        }
      }
      if (finished[k]) {
        for (const auto& m : inbox[k]) merge(k, m);
        inbox[k].clear();
      }
    } else if (e.kind == Kind::kReply) {  // pull: the peer answers at once
      const int peer = asked[k];
      ws[peer].weight /= 2;
      ev.push(send(peer, k, now), Kind::kMix, k);
    } else {  // kMix: merge what arrived, go on
      for (const auto& m : inbox[k]) merge(k, m);
      inbox[k].clear();
      start_step(k, now);
    }
    return run.maybe_evaluate(now, consensus);
  });
  return run.finish(end, consensus());
}

}  // namespace

VirtualStrategy parse_virtual_strategy(const std::string& text) {
  if (text == "ddp") return VirtualStrategy::kSync;
  if (text == "ps") return VirtualStrategy::kPs;
  if (text == "easgd") return VirtualStrategy::kEasgd;
  if (text == "gossip") return VirtualStrategy::kGossip;
  if (text == "local-sgd") return VirtualStrategy::kLocalSgd;
  throw InvalidArgument(
      fmt::format("--strategy: '{}' is not one of ddp, ps, easgd, gossip, local-sgd", text));
}

std::string name_of(VirtualStrategy s) {
  switch (s) {
    case VirtualStrategy::kSync:
      return "ddp";
    case VirtualStrategy::kPs:
      return "ps";
    case VirtualStrategy::kEasgd:
      return "easgd";
    case VirtualStrategy::kGossip:
      return "gossip";
    case VirtualStrategy::kLocalSgd:
      return "local-sgd";
  }
  return "?";
}

VirtualResult run_virtual_workers(const VirtualProblem& problem, const VirtualOptions& o) {
  TANDEM_CHECK(o.workers >= 1, "lab converge: --workers must be at least 1 (got {})", o.workers);
  TANDEM_CHECK(o.max_steps >= 1, "lab converge: --max-steps must be at least 1 (got {})",
               o.max_steps);
  TANDEM_CHECK(o.eval_every >= 1, "lab converge: --eval-every must be at least 1 (got {})",
               o.eval_every);
  TANDEM_CHECK(o.tau >= 1, "lab converge: --tau must be at least 1 (got {})", o.tau);
  TANDEM_CHECK(o.sync_every >= 1, "lab converge: --sync-every must be at least 1 (got {})",
               o.sync_every);
  TANDEM_CHECK(!o.times || o.times->workers() == o.workers,
               "lab converge: the cost model has {} workers, the run {}",
               o.times ? o.times->workers() : 0, o.workers);
  Run run(problem, o);
  switch (o.strategy) {
    case VirtualStrategy::kSync:
      return run_sync(run, o);
    case VirtualStrategy::kLocalSgd:
      return run_local_sgd(run, o);
    case VirtualStrategy::kPs:
    case VirtualStrategy::kEasgd:
      return run_server(run, o);
    case VirtualStrategy::kGossip:
      return run_gossip(run, o);
  }
  throw InternalError("lab converge: unknown strategy");
}

}  // namespace tandem::lab
