// The strategies of tandem train whose workers do not step in lock step:
// ps, easgd and ddp with backup workers (through parameter servers), gossip,
// and local-sgd; plus the server ranks' side, serve_parameters().
#include "train/async_strategies.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>

#include <chrono>

#include "tandem/core/check.h"
#include "tandem/memory/storage_set.h"
#include "tandem/parallel/async/gossip.h"
#include "tandem/parallel/async/local_sgd.h"
#include "tandem/parallel/async/parameter_client.h"
#include "tandem/parallel/async/parameter_server.h"
#include "tandem/parallel/async/update_rules.h"
#include "tandem/parallel/optimizer_state.h"
#include "tandem/train/straggler.h"

namespace tandem::train {
namespace {

using Seconds = std::chrono::duration<double>;

using parallel::copy_into;
using parallel::flat_gradients;
using parallel::flat_of;

parallel::PsMode ps_mode(const TrainerOptions& o) {
  switch (o.strategy.kind) {
    case StrategyKind::kEasgd:
      return parallel::PsMode::kElastic;
    case StrategyKind::kDdp:
      return parallel::PsMode::kSync;  // backup workers
    default:
      return parallel::PsMode::kAsync;
  }
}

// The strategies share this: a local LibTorch optimizer (when the worker
// steps itself), timing of the communication, memory samples.
class AsyncBase : public Strategy {
 public:
  AsyncBase(const TrainerOptions& o, std::shared_ptr<torch::nn::Module> module,
            std::shared_ptr<Communicator> workers, bool local_optimizer)
      : Strategy(std::move(module)), workers_(std::move(workers)) {
    params_ = module_->parameters();
    if (local_optimizer) opt_ = make_optimizer(o, params_);
  }
  void set_lr(double lr) override {
    lr_ = lr;
    if (opt_) train::set_lr(*opt_, lr);
  }
  void zero_grad() override {
    for (auto& p : params_) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
  }
  void clip_grad_norm(double max_norm) override {
    torch::nn::utils::clip_grad_norm_(params_, max_norm);
  }
  memory::MemoryAccounting memory() const override { return memory_; }
  Stats stats() const override { return stats_; }

 protected:
  // Runs fn, adding its time to the wait statistics.
  template <typename Fn>
  auto timed(Fn&& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    struct Add {
      Stats& s;
      std::chrono::steady_clock::time_point t0;
      ~Add() { s.wait_seconds += Seconds(std::chrono::steady_clock::now() - t0).count(); }
    } add{stats_, t0};
    return fn();
  }
  void sample_memory() {
    std::vector<at::Tensor> state;
    if (opt_) state = parallel::optimizer_state_tensors(*opt_);
    memory_.sample(params_, memory::gradients_of(params_), state);
  }

  std::shared_ptr<Communicator> workers_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
  double lr_ = 0;
  Stats stats_;
  memory::MemoryAccounting memory_;
};

// ps, easgd, and ddp with backup workers: the worker's side.
class PsWorker final : public AsyncBase {
 public:
  PsWorker(const TrainerOptions& o, std::shared_ptr<torch::nn::Module> module,
           std::shared_ptr<Communicator> comm, std::shared_ptr<Communicator> workers)
      : AsyncBase(o, std::move(module), std::move(workers),
                  ps_mode(o) == parallel::PsMode::kElastic),
        mode_(ps_mode(o)),
        tau_(o.strategy.async.tau) {
    flat_ = flat_of(params_).contiguous();
    client_ = std::make_unique<parallel::ParameterClient>(
        comm, parallel::PsRoles::of(comm->size(), o.strategy.async.servers), flat_.numel(),
        flat_.scalar_type());
    // Start from the servers' parameters (the same as ours when every rank
    // built the model from the same seed, but the servers' are the truth).
    step_ = client_->pull(flat_).version;
    copy_into(flat_, params_);
  }
  ~PsWorker() override {
    try {
      client_->done();
    } catch (...) {  // already reported by the step that failed
    }
  }
  // Even with backup workers: a per-step collective for the log would make
  // the fast workers wait for the slow one after all.
  bool synchronous() const override { return false; }
  bool finished() const override { return finished_; }

  void step() override {
    if (mode_ == parallel::PsMode::kElastic) {
      opt_->step();
      if (++local_steps_ % tau_ == 0) {
        flat_.copy_(flat_of(params_));
        auto r = timed([&] { return client_->elastic_exchange(flat_); });
        ++stats_.staleness[r.staleness];
        copy_into(flat_, params_);
      }
    } else if (mode_ == parallel::PsMode::kAsync) {
      at::Tensor grad = flat_gradients(params_);
      auto r = timed([&] { return client_->push_gradient(grad, lr_, flat_); });
      ++stats_.staleness[r.staleness];
      copy_into(flat_, params_);
    } else {
      at::Tensor grad = flat_gradients(params_);
      auto r = timed([&] { return client_->push_sync(grad, step_, lr_, flat_); });
      stats_.dropped_gradients += r.dropped ? 1 : 0;
      step_ = r.version;
      finished_ = r.finished;
      copy_into(flat_, params_);
    }
    sample_memory();
  }
  void finish() override {
    client_->done();
    if (mode_ == parallel::PsMode::kElastic) {
      stats_.consensus_distance = parallel::consensus_distance(*workers_, params_);
    }
  }

 private:
  const parallel::PsMode mode_;
  const int64_t tau_;
  std::unique_ptr<parallel::ParameterClient> client_;
  at::Tensor flat_;
  int64_t step_ = 0;
  int64_t local_steps_ = 0;
  bool finished_ = false;
};

class Gossip final : public AsyncBase {
 public:
  Gossip(const TrainerOptions& o, std::shared_ptr<torch::nn::Module> module,
         std::shared_ptr<Communicator> workers)
      : AsyncBase(o, std::move(module), std::move(workers), true) {
    parallel::GossipOptions go;
    go.variant = o.strategy.async.gossip == GossipMode::kPull ? parallel::GossipVariant::kPull
                                                              : parallel::GossipVariant::kPush;
    go.seed = o.run.seed;
    mixer_ = std::make_unique<parallel::GossipMixer>(workers_, params_, go);
  }
  bool synchronous() const override { return false; }
  void step() override {
    {
      auto lock = mixer_->lock_parameters();
      opt_->step();
    }
    timed([&] { mixer_->mix(); });
    sample_memory();
  }
  void finish() override {
    mixer_->finish();  // waits for the slowest peer's goodbye: not a per-step wait
    stats_.consensus_distance = parallel::consensus_distance(*workers_, params_, mixer_->weight());
  }

 private:
  std::unique_ptr<parallel::GossipMixer> mixer_;
};

class LocalSgdStrategy final : public AsyncBase {
 public:
  LocalSgdStrategy(const TrainerOptions& o, std::shared_ptr<torch::nn::Module> module,
                   std::shared_ptr<Communicator> workers)
      : AsyncBase(o, module, workers, true),
        local_(std::make_unique<parallel::LocalSgd>(module, workers, o.strategy.async.sync_every)) {
  }
  // Workers meet only every sync_every steps; a per-step log collective
  // would add the barrier local SGD exists to avoid.
  bool synchronous() const override { return false; }
  void step() override {
    opt_->step();
    if (timed([&] { return local_->after_step(); })) {
      stats_.consensus_distance = local_->last_consensus_distance();
    }
    sample_memory();
  }
  void finish() override {
    // The spread just before the last average; a run too short to average
    // reports the spread it ends with.
    if (local_->averages() == 0) {
      stats_.consensus_distance = parallel::consensus_distance(*workers_, params_);
    }
  }

 private:
  std::unique_ptr<parallel::LocalSgd> local_;
};

}  // namespace

// " (3 workers + 1 server, staleness 2)": the strategy's knobs, for the header line.
std::string strategy_details(const TrainerOptions& o, int world) {
  const AsyncConfig& a = o.strategy.async;
  std::string d;
  const int servers = servers_for(o);
  const std::string roles =
      fmt::format("{} workers + {} server{}", world - servers, servers, servers == 1 ? "" : "s");
  switch (o.strategy.kind) {
    case StrategyKind::kPs:
      d = fmt::format(" ({}, staleness {})", roles,
                      a.staleness < 0 ? std::string("unbounded") : std::to_string(a.staleness));
      break;
    case StrategyKind::kEasgd:
      d = fmt::format(" ({}, tau {}, alpha {})", roles, a.tau, a.alpha);
      break;
    case StrategyKind::kGossip:
      d = fmt::format(" ({})", name_of(a.gossip));
      break;
    case StrategyKind::kLocalSgd:
      d = fmt::format(" (average every {} steps)", a.sync_every);
      break;
    default:
      if (a.backup_workers > 0) {
        d = fmt::format(" ({}, {} backup worker{})", roles, a.backup_workers,
                        a.backup_workers == 1 ? "" : "s");
      }
  }
  const std::string delay = describe(o.straggler.delay);
  const std::string slowdown = describe(o.straggler.slowdown);
  if (!delay.empty()) d += fmt::format(", inject-delay {}", delay);
  if (!slowdown.empty()) d += fmt::format(", inject-slowdown {}", slowdown);
  return d;
}

// Rank 0's strategy measurements, one line.
std::string strategy_summary(const TrainerOptions& o, const TrainSummary& s) {
  const StrategyKind kind = o.strategy.kind;
  std::string line =
      fmt::format("strategy {} on rank 0: {:.1f} ms/step, waiting {:.1f} ms/step", name_of(kind),
                  s.mean_step_seconds * 1e3, s.steps > 0 ? s.wait_seconds * 1e3 / s.steps : 0.0);
  if (!s.staleness_histogram.empty()) {
    std::vector<std::string> bins;
    for (const auto& [k, n] : s.staleness_histogram) bins.push_back(fmt::format("{}: {}", k, n));
    line +=
        fmt::format("; {} histogram {{{}}}", kind == StrategyKind::kEasgd ? "delay" : "staleness",
                    fmt::join(bins, ", "));
  }
  if (o.strategy.async.backup_workers > 0) {
    line += fmt::format("; dropped gradients {}", s.dropped_gradients);
  }
  if (s.consensus_distance >= 0) {
    line += fmt::format("; consensus distance {:.4g}", s.consensus_distance);
  }
  return line + "\n";
}

std::unique_ptr<Strategy> make_async_strategy(const TrainerOptions& o,
                                              const std::shared_ptr<torch::nn::Module>& module,
                                              const std::shared_ptr<Communicator>& comm,
                                              const std::shared_ptr<Communicator>& workers) {
  switch (o.strategy.kind) {
    case StrategyKind::kGossip:
      return std::make_unique<Gossip>(o, module, workers);
    case StrategyKind::kLocalSgd:
      return std::make_unique<LocalSgdStrategy>(o, module, workers);
    default:
      return std::make_unique<PsWorker>(o, module, comm, workers);  // ps, easgd, backup workers
  }
}

TrainSummary serve_parameters(const TrainerOptions& o,
                              const std::shared_ptr<torch::nn::Module>& module,
                              const std::shared_ptr<Communicator>& comm,
                              parallel::ParameterServerState* carry) {
  TANDEM_CHECK(servers_for(o) > 0, "--strategy {} has no parameter servers",
               name_of(o.strategy.kind));
  const AsyncConfig& a = o.strategy.async;
  const auto roles = parallel::PsRoles::of(comm->size(), a.servers);
  parallel::ParameterServerOptions so;
  so.mode = ps_mode(o);
  so.staleness = a.staleness;
  so.backup_workers = a.backup_workers;
  so.total_steps = so.mode == parallel::PsMode::kSync ? o.run.steps : 0;
  so.alpha = a.alpha;
  so.make_optimizer = [o](std::vector<at::Tensor> p) { return make_optimizer(o, std::move(p)); };
  so.set_lr = [](torch::optim::Optimizer& opt, double lr) { train::set_lr(opt, lr); };
  parallel::ParameterServer server(comm, roles, flat_of(module->parameters()), so);
  if (carry && carry->shard.defined()) server.restore(*carry);
  const auto start = std::chrono::steady_clock::now();
  try {
    server.serve();
  } catch (...) {
    if (carry) *carry = server.state();
    throw;
  }
  TrainSummary s;
  s.server = true;
  s.workers = roles.workers;
  s.wall_seconds = Seconds(std::chrono::steady_clock::now() - start).count();
  s.steps = server.applied_steps();
  for (const auto& u : server.updates()) {
    if (u.dropped) {
      ++s.dropped_gradients;
    } else {
      ++s.staleness_histogram[so.mode == parallel::PsMode::kElastic ? u.delay : u.staleness];
    }
  }
  return s;
}

}  // namespace tandem::train
