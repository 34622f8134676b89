#include "tandem/parallel/async/parameter_server.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <fmt/format.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <thread>

#include "parallel/async/ps_protocol.h"
#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/parallel/async/update_rules.h"

namespace tandem::parallel {

using detail::kHeaderLength;
using detail::kHeaderTag;
using detail::kPayloadTag;
using detail::PsKind;

PsRoles PsRoles::of(int world_size, int servers) {
  TANDEM_CHECK(servers >= 1 && servers < world_size,
               "parameter server: --servers must be in [1, {}) with {} ranks, leaving at least "
               "one worker (got {})",
               world_size, world_size, servers);
  return PsRoles{world_size - servers, servers};
}

ShardRange PsRoles::shard(int64_t numel, int server) const {
  return shard_range(numel, servers, server);
}

ParameterServer::ParameterServer(std::shared_ptr<Communicator> comm, PsRoles roles,
                                 const at::Tensor& initial, ParameterServerOptions options)
    : comm_(std::move(comm)),
      roles_(roles),
      options_(std::move(options)),
      server_(comm_ ? comm_->rank() - roles.workers : -1) {
  TANDEM_CHECK(comm_ != nullptr, "ParameterServer: the communicator is null");
  TANDEM_CHECK(roles_.workers + roles_.servers == comm_->size() && roles_.workers >= 1,
               "ParameterServer: {} workers + {} servers do not make the {} ranks", roles_.workers,
               roles_.servers, comm_->size());
  TANDEM_CHECK(roles_.is_server(comm_->rank()),
               "ParameterServer: rank {} is a worker (ranks [0, {}) train); build a "
               "ParameterClient there",
               comm_->rank(), roles_.workers);
  TANDEM_CHECK(options_.staleness >= -1, "ParameterServer: staleness must be >= -1 (got {})",
               options_.staleness);
  TANDEM_CHECK(options_.backup_workers >= 0 && options_.backup_workers < roles_.workers,
               "ParameterServer: backup_workers must be in [0, {}) with {} workers (got {})",
               roles_.workers, roles_.workers, options_.backup_workers);
  TANDEM_CHECK(options_.alpha > 0 && options_.alpha <= 1,
               "ParameterServer: alpha must be in (0, 1] (got {})", options_.alpha);
  TANDEM_CHECK(initial.dim() == 1 && at::isFloatingType(initial.scalar_type()),
               "ParameterServer: the initial parameters must be one flat floating-point vector");
  range_ = roles_.shard(initial.numel(), server_);
  shard_ = initial.narrow(0, range_.offset, range_.numel).detach().clone().contiguous();
  if (options_.mode != PsMode::kElastic) {
    TANDEM_CHECK(options_.make_optimizer && options_.set_lr,
                 "ParameterServer: kAsync and kSync need make_optimizer and set_lr");
    shard_.set_requires_grad(true);
    optimizer_ = options_.make_optimizer({shard_});
  }
  if (options_.mode == PsMode::kSync) sum_ = at::zeros_like(shard_.detach());
  const auto w = static_cast<size_t>(roles_.workers);
  clocks_.assign(w, 0);
  active_.assign(w, true);
  pulled_version_.assign(w, 0);
  pulled_min_clock_.assign(w, 0);
}

ParameterServer::~ParameterServer() = default;

at::Tensor ParameterServer::shard() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return shard_.detach().clone();
}

ParameterServerState ParameterServer::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ParameterServerState s{shard_.detach().clone(), std::nullopt};
  if (optimizer_) {
    if (const auto* param_state = find_param_state(*optimizer_, shard_)) {
      ParamStateFields fields = param_state_fields(*param_state);
      for (auto& [name, t] : fields.tensors) t = t.detach().clone();
      s.optimizer = std::move(fields);
    }
  }
  return s;
}

void ParameterServer::restore(const ParameterServerState& s) {
  TANDEM_CHECK(s.shard.defined() && s.shard.numel() == range_.numel,
               "ParameterServer::restore: a shard of {} elements for server {}, whose shard has "
               "{}",
               s.shard.defined() ? s.shard.numel() : 0, server_, range_.numel);
  std::lock_guard<std::mutex> lock(mutex_);
  {
    at::NoGradGuard no_grad;
    shard_.copy_(s.shard.reshape(-1));
  }
  if (optimizer_ && s.optimizer) {
    ParamStateFields fields = *s.optimizer;
    for (auto& [name, t] : fields.tensors) t = t.detach().clone();
    set_param_state(*optimizer_, shard_, make_param_state(optimizer_kind(*optimizer_), fields));
  }
}

void ParameterServer::serve() {
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(roles_.workers));
  for (int w = 0; w < roles_.workers; ++w) {
    threads.emplace_back([this, w] {
      try {
        serve_worker(w);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!failure_) failure_ = std::current_exception();
        active_[static_cast<size_t>(w)] = false;
        changed_.notify_all();
      }
    });
  }
  // Each thread ends on its worker's done, or by its receive's deadline.
  for (auto& t : threads) t.join();
  if (failure_) std::rethrow_exception(failure_);
}

void ParameterServer::serve_worker(int worker) {
  const auto opts = at::TensorOptions().dtype(shard_.scalar_type());
  at::Tensor header = at::empty({kHeaderLength}, at::kDouble);
  at::Tensor reply_header = at::zeros({kHeaderLength}, at::kDouble);
  at::Tensor payload = at::empty({range_.numel}, opts);
  at::Tensor reply = at::empty({range_.numel}, opts);
  for (;;) {
    comm_->recv(header, worker, kHeaderTag);
    const double* h = header.data_ptr<double>();
    const auto kind = static_cast<PsKind>(static_cast<int64_t>(h[0]));
    const auto step = static_cast<int64_t>(h[1]);
    const double lr = h[2];
    double* r = reply_header.data_ptr<double>();
    std::fill(r, r + kHeaderLength, 0.0);
    if (kind == PsKind::kDone) {
      finish_worker(worker);
      return;
    }
    if (kind != PsKind::kPull) comm_->recv(payload, worker, kPayloadTag);
    if (kind == PsKind::kPull) {
      std::lock_guard<std::mutex> lock(mutex_);
      pulled_version_[static_cast<size_t>(worker)] = version_;
      pulled_min_clock_[static_cast<size_t>(worker)] = min_active_clock();
      reply.copy_(shard_.detach());
      fill_reply_header(r);
    } else if (kind == PsKind::kPushGradient) {
      apply_async(worker, lr, payload, reply, r);
    } else if (kind == PsKind::kPushSync) {
      apply_sync(worker, step, lr, payload, reply, r);
    } else if (kind == PsKind::kElastic) {
      apply_elastic(worker, payload, reply, r);
    } else {
      throw InternalError(
          fmt::format("rank {} (parameter server {}): worker rank {} sent an "
                      "unknown request kind {}",
                      comm_->rank(), server_, worker, h[0]));
    }
    comm_->send(reply_header, worker, kHeaderTag);
    comm_->send(reply, worker, kPayloadTag);
  }
}

// Waits on changed_ until pred() holds, the communicator's timeout passes
// (TimeoutError naming the slowest worker), or another thread failed.
template <typename Pred>
void ParameterServer::wait_for(std::unique_lock<std::mutex>& lock, int worker, const char* why,
                               Pred pred) {
  const auto deadline = Clock::now() + comm_->timeout();
  const bool ok = changed_.wait_until(lock, deadline, [&] { return failure_ || pred(); });
  if (failure_) {
    throw PeerError(
        fmt::format("rank {} (parameter server {}): stopped serving worker rank {}: "
                    "the thread serving another worker failed",
                    comm_->rank(), server_, worker));
  }
  if (!ok) {
    const int slow = slowest_worker();
    throw TimeoutError(fmt::format(
        "rank {} (parameter server {}): worker rank {} waited {} for {}; the slowest worker, "
        "rank {}, is at clock {} against {} (applied steps {}); raise the communicator timeout "
        "or look at rank {}",
        comm_->rank(), server_, worker, format_duration(comm_->timeout()), why, slow,
        clocks_[static_cast<size_t>(slow)], clocks_[static_cast<size_t>(worker)], version_, slow));
  }
}

// The version goes out with the parameters copied under the same lock: a
// kSync worker pushes its next gradient for exactly the step of the
// parameters it holds, so a gradient is never applied to a later step.
void ParameterServer::fill_reply_header(double* r) const {
  r[0] = static_cast<double>(version_);
  r[2] = options_.total_steps > 0 && version_ >= options_.total_steps ? 1.0 : 0.0;
}

void ParameterServer::optimizer_step(const at::Tensor& grad, double lr) {
  server_step(*optimizer_, shard_, grad, lr, options_.set_lr);
}

void ParameterServer::apply_async(int worker, double lr, const at::Tensor& grad,
                                  const at::Tensor& reply, double* header) {
  const auto w = static_cast<size_t>(worker);
  std::unique_lock<std::mutex> lock(mutex_);
  PsUpdateRecord rec;
  rec.worker = worker;
  rec.clock = clocks_[w];
  rec.staleness = clocks_[w] - pulled_min_clock_[w];
  rec.delay = version_ - pulled_version_[w];
  optimizer_step(grad, lr);
  ++version_;
  ++clocks_[w];
  records_.push_back(rec);
  header[1] = static_cast<double>(rec.staleness);
  changed_.notify_all();
  // Stale synchronous parallel: the parameters for this worker's next step
  // may miss at most `staleness` clocks of the slowest active worker.
  if (options_.staleness >= 0) {
    wait_for(lock, worker, "the slowest worker to come within the staleness bound",
             [&] { return clocks_[w] - min_active_clock() <= options_.staleness; });
  }
  pulled_version_[w] = version_;
  pulled_min_clock_[w] = min_active_clock();
  reply.copy_(shard_.detach());
  fill_reply_header(header);
}

void ParameterServer::apply_sync(int worker, int64_t step, double lr, const at::Tensor& grad,
                                 const at::Tensor& reply, double* header) {
  std::unique_lock<std::mutex> lock(mutex_);
  PsUpdateRecord rec;
  rec.worker = worker;
  rec.clock = step;
  TANDEM_ASSERT(step <= version_,
                "parameter server {}: worker rank {} pushed for step {} but the "
                "server is at step {}",
                server_, worker, step, version_);
  const bool done = options_.total_steps > 0 && version_ >= options_.total_steps;
  if (step < version_ || done) {
    // Its step was applied without it (Note: never applied stale).
    rec.dropped = true;
    header[3] = 1.0;
  } else {
    sum_.add_(grad);
    ++contributors_;
    sync_lr_ = lr;
    if (!complete_sync_step_if_quorum()) {
      wait_for(lock, worker, "the other workers' gradients of this step",
               [&] { return version_ > step; });
    }
  }
  records_.push_back(rec);
  reply.copy_(shard_.detach());
  fill_reply_header(header);
}

void ParameterServer::apply_elastic(int worker, const at::Tensor& params, const at::Tensor& reply,
                                    double* header) {
  const auto w = static_cast<size_t>(worker);
  std::lock_guard<std::mutex> lock(mutex_);
  PsUpdateRecord rec;
  rec.worker = worker;
  rec.clock = clocks_[w];
  rec.delay = version_ - pulled_version_[w];
  // x_i -= alpha (x_i - c) on the worker, c += alpha (x_i - c) here.
  at::NoGradGuard no_grad;
  elastic_move(params, shard_, options_.alpha, reply);
  shard_.add_(reply);
  ++version_;
  ++clocks_[w];
  pulled_version_[w] = version_;
  records_.push_back(rec);
  header[1] = static_cast<double>(rec.delay);
  fill_reply_header(header);
}

void ParameterServer::finish_worker(int worker) {
  std::lock_guard<std::mutex> lock(mutex_);
  active_[static_cast<size_t>(worker)] = false;
  // A backup quorum may now be met by the workers still running.
  if (options_.mode == PsMode::kSync) complete_sync_step_if_quorum();
  changed_.notify_all();
}

// kSync: applies the mean of this step's gradients once the first
// (workers - backup_workers) of them, or every still-active worker's, are in.
bool ParameterServer::complete_sync_step_if_quorum() {
  const int active = static_cast<int>(std::count(active_.begin(), active_.end(), true));
  const int quorum = std::min(roles_.workers - options_.backup_workers, active);
  if (contributors_ == 0 || contributors_ < quorum) return false;
  optimizer_step(sum_.div(static_cast<double>(contributors_)), sync_lr_);
  sum_.zero_();
  contributors_ = 0;
  ++version_;
  changed_.notify_all();
  return true;
}

int64_t ParameterServer::min_active_clock() const {
  int64_t low = -1;
  for (size_t w = 0; w < clocks_.size(); ++w) {
    if (active_[w] && (low < 0 || clocks_[w] < low)) low = clocks_[w];
  }
  return low < 0 ? 0 : low;
}

int ParameterServer::slowest_worker() const {
  int slow = -1;
  for (size_t w = 0; w < clocks_.size(); ++w) {
    if (active_[w] && (slow < 0 || clocks_[w] < clocks_[static_cast<size_t>(slow)])) {
      slow = static_cast<int>(w);
    }
  }
  return std::max(slow, 0);
}

}  // namespace tandem::parallel
