// ParameterServer: the server side of the parameter-server strategies. The
// last `servers` ranks of the communicator serve; ranks [0, workers) train
// and talk to them through ParameterClient (parameter_client.h). Each server
// owns a shard (shard_range over the servers) of the flat parameter vector
// and answers every worker on a thread of its own, so workers never wait for
// each other unless a mode says so:
//   kAsync   asynchronous SGD (Downpour-style): a pushed gradient is applied
//            at once by the server's optimizer and the fresh shard goes back.
//            Optional bounded staleness (stale synchronous parallel, Ho et
//            al. 2013): a worker more than `staleness` clocks ahead of the
//            slowest active worker waits before it gets parameters back.
//   kSync    synchronous SGD with backup workers (Chen et al. 2016): step t
//            applies the mean of the first (workers - backup_workers)
//            gradients pushed for t; a gradient that arrives after its step
//            was applied is dropped, never applied stale.
//   kElastic elastic averaging SGD (Zhang et al. 2015): the shard is the
//            center variable; an exchange moves the worker and the center
//            toward each other by alpha times their difference.
// Messages are point-to-point with tags (see src/parallel/async/ps_protocol.h);
// there is no barrier and no collective while serving.
//
// Not thread-safe as an object (one thread calls serve()); it runs its own
// threads inside serve() and joins them before returning.
#pragma once

#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/parallel/optimizer_state.h"

namespace torch::optim {
class Optimizer;
}

namespace tandem::parallel {

// Who does what: ranks [0, workers) train, [workers, workers + servers) serve.
struct PsRoles {
  int workers = 0;
  int servers = 0;
  // Throws InvalidArgument unless 1 <= servers < world_size.
  static PsRoles of(int world_size, int servers);
  bool is_server(int rank) const { return rank >= workers; }
  int server_rank(int server) const { return workers + server; }
  // The part of a length-`numel` flat vector that server `server` owns.
  ShardRange shard(int64_t numel, int server) const;
};

enum class PsMode { kAsync, kSync, kElastic };

struct ParameterServerOptions {
  PsMode mode = PsMode::kAsync;
  // kAsync: the stale-synchronous bound s in clocks (a worker's clock is the
  // number of its gradients applied); -1 (default) is fully asynchronous.
  // s = 0 makes the workers take turns in lock step.
  int64_t staleness = -1;
  // kSync: how many of the slowest gradients each step does without (b);
  // each step applies the first workers - b. 0 is plain synchronous SGD.
  int backup_workers = 0;
  // kSync: after this many applied steps every reply tells the worker to
  // stop (0: never; workers then stop on their own and say done).
  int64_t total_steps = 0;
  // kElastic: the elastic coefficient alpha in (0, 1].
  double alpha = 0.1;
  // kAsync and kSync: builds the optimizer over the server's shard (one
  // leaf tensor), and sets its learning rate; each push carries the
  // worker's current learning rate.
  std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<at::Tensor>)> make_optimizer;
  std::function<void(torch::optim::Optimizer&, double)> set_lr;
};

// One pushed gradient or elastic exchange, as the server saw it.
struct PsUpdateRecord {
  int worker = 0;     // the worker's rank
  int64_t clock = 0;  // the worker's clock (updates of its applied before this one)
  // kAsync: how many clocks the slowest active worker was behind this one
  // when it pulled the parameters the gradient was computed on; never above
  // the staleness bound. 0 in the other modes.
  int64_t staleness = 0;
  // Updates applied by other workers between this worker's pull (kAsync) or
  // previous exchange (kElastic) and this update.
  int64_t delay = 0;
  bool dropped = false;  // kSync: arrived after its step was applied
};

// A server's state, carried from one ParameterServer to the next when an
// elastic job re-forms (docs/elastic.md): copies of its shard (the center
// variable under kElastic) and of the optimizer's state for it.
struct ParameterServerState {
  at::Tensor shard;
  std::optional<ParamStateFields> optimizer;  // none before the first step, or under kElastic
};

class ParameterServer {
 public:
  // Called on server ranks only. `initial` is the full flat parameter vector
  // (the same on every rank); this server keeps its shard of it. Throws
  // InvalidArgument on bad options or on a worker rank.
  ParameterServer(std::shared_ptr<Communicator> comm, PsRoles roles, const at::Tensor& initial,
                  ParameterServerOptions options);
  ~ParameterServer();
  ParameterServer(const ParameterServer&) = delete;
  ParameterServer& operator=(const ParameterServer&) = delete;

  // Serves every worker until each has said done (ParameterClient::done).
  // Blocks; every receive is bounded by the communicator's timeout, and a
  // wait for a slow worker (staleness bound, backup quorum) by the same
  // timeout. Rethrows the first error of any serving thread, naming the
  // worker.
  void serve();

  // After serve(): every update in the order applied.
  const std::vector<PsUpdateRecord>& updates() const { return records_; }
  // This server's shard (the center variable under kElastic).
  at::Tensor shard() const;
  int64_t applied_steps() const { return version_; }

  // Copies of the shard and its optimizer state. Not while serve() runs.
  ParameterServerState state() const;
  // Before serve(): takes `s` (from the server of the same shard in an
  // earlier generation) as its shard and optimizer state. Throws
  // InvalidArgument when the shard's length differs.
  void restore(const ParameterServerState& s);

 private:
  void serve_worker(int worker);
  // Each fills `reply` and the reply header (see ps_protocol.h) under the lock.
  void apply_async(int worker, double lr, const at::Tensor& grad, const at::Tensor& reply,
                   double* header);
  void apply_sync(int worker, int64_t step, double lr, const at::Tensor& grad,
                  const at::Tensor& reply, double* header);
  void apply_elastic(int worker, const at::Tensor& params, const at::Tensor& reply, double* header);
  void fill_reply_header(double* header) const;  // mutex_ held
  bool complete_sync_step_if_quorum();           // mutex_ held; true if it stepped
  void optimizer_step(const at::Tensor& grad, double lr);
  void finish_worker(int worker);
  int64_t min_active_clock() const;
  int slowest_worker() const;
  template <typename Pred>
  void wait_for(std::unique_lock<std::mutex>& lock, int worker, const char* why, Pred pred);

  std::shared_ptr<Communicator> comm_;
  const PsRoles roles_;
  const ParameterServerOptions options_;
  const int server_;  // this server's index
  ShardRange range_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;        // clocks, steps, finishes, failures
  at::Tensor shard_;                       // guarded by mutex_
  int64_t version_ = 0;                    // guarded by mutex_; updates or steps applied
  std::vector<int64_t> clocks_;            // guarded by mutex_; per worker
  std::vector<bool> active_;               // guarded by mutex_; not yet done
  std::vector<int64_t> pulled_version_;    // guarded by mutex_; version at the last reply
  std::vector<int64_t> pulled_min_clock_;  // guarded by mutex_
  at::Tensor sum_;                         // guarded by mutex_; kSync: this step's gradients
  int contributors_ = 0;                   // guarded by mutex_
  double sync_lr_ = 0;                     // guarded by mutex_; lr of this step's pushes
  std::vector<PsUpdateRecord> records_;    // guarded by mutex_
  std::exception_ptr failure_;             // guarded by mutex_; the first thread's error
};

}  // namespace tandem::parallel
