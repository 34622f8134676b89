#include "tandem/comm/communicator.h"

#include <ATen/ops/empty.h>
#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <numeric>
#include <thread>

#include "comm/timeout_hints.h"
#include "tandem/core/check.h"
#include "tandem/core/log.h"

namespace tandem {

std::string_view to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMin:
      return "min";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kProduct:
      return "product";
  }
  return "?";
}

ShardRange shard_range(int64_t numel, int world_size, int rank) {
  TANDEM_CHECK(numel >= 0, "shard_range: numel must be >= 0 (got {})", numel);
  TANDEM_CHECK(world_size >= 1, "shard_range: world_size must be >= 1 (got {})", world_size);
  TANDEM_CHECK(rank >= 0 && rank < world_size, "shard_range: rank {} is outside [0, {})", rank,
               world_size);
  int64_t base = numel / world_size;
  int64_t extra = numel % world_size;
  ShardRange r;
  r.numel = base + (rank < extra ? 1 : 0);
  r.offset = rank * base + std::min<int64_t>(rank, extra);
  return r;
}

namespace {

// The dtypes every operation moves: every one LibTorch has on CPU except
// complex32 and the quantized types, which have no arithmetic there.
constexpr at::ScalarType kCommDtypes[] = {
    at::kBool, at::kByte,     at::kChar,  at::kShort,  at::kInt,          at::kLong,
    at::kHalf, at::kBFloat16, at::kFloat, at::kDouble, at::kComplexFloat, at::kComplexDouble};

}  // namespace

void check_comm_tensor(const at::Tensor& t, std::string_view what) {
  TANDEM_CHECK(t.defined(), "{} is an undefined tensor", what);
  TANDEM_CHECK(t.device().is_cpu(), "{} is on {}; Tandem communicators take CPU tensors", what,
               t.device().str());
  TANDEM_CHECK(t.is_contiguous(), "{} is not contiguous; call .contiguous() first", what);
  const auto s = t.scalar_type();
  TANDEM_CHECK(
      std::find(std::begin(kCommDtypes), std::end(kCommDtypes), s) != std::end(kCommDtypes),
      "{} has dtype {}; supported: bool, uint8, int8, int16, int32, int64, float16, "
      "bfloat16, float32, float64, complex64, complex128",
      what, c10::toString(s));
}

void check_reduce_op(ReduceOp op, at::ScalarType dtype, std::string_view what) {
  if (dtype == at::kBool) {
    TANDEM_CHECK(op == ReduceOp::kMax || op == ReduceOp::kMin,
                 "{}: ReduceOp {} is not defined for bool tensors; use max (logical or) or min "
                 "(logical and), or convert the tensor to an integer dtype first",
                 what, to_string(op));
  }
  if (at::isComplexType(dtype)) {
    TANDEM_CHECK(op != ReduceOp::kMax && op != ReduceOp::kMin,
                 "{}: ReduceOp {} is not defined for {} tensors (complex numbers have no order); "
                 "use sum, avg or product, or reduce the real and imaginary parts separately",
                 what, to_string(op), c10::toString(dtype));
  }
}

namespace {

std::string describe_bytes(double bytes) {
  if (bytes >= 1024.0 * 1024.0) return fmt::format("{:.1f} MiB", bytes / (1024.0 * 1024.0));
  if (bytes >= 1024.0) return fmt::format("{:.1f} KiB", bytes / 1024.0);
  return fmt::format("{} B", static_cast<int64_t>(bytes));
}

}  // namespace

// Runs asynchronous operations in issue order on one thread.
class Communicator::Executor {
 public:
  Executor() : thread_([this] { loop(); }) {}
  ~Executor() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(task));
    }
    cv_.notify_all();
  }

  // Waits until every posted task has run; false if `deadline` passed first.
  bool drain(const Deadline& deadline) {
    std::unique_lock<std::mutex> lock(mutex_);
    return idle_cv_.wait_until(lock, deadline.at(), [this] { return queue_.empty() && !busy_; });
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and nothing left
      auto task = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      lock.unlock();
      task();  // never throws: tasks report through their Work
      lock.lock();
      busy_ = false;
      if (queue_.empty()) idle_cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;               // guarded by mutex_: work posted or stop
  std::condition_variable idle_cv_;          // guarded by mutex_: queue drained
  std::deque<std::function<void()>> queue_;  // guarded by mutex_
  bool busy_ = false;                        // guarded by mutex_
  bool stop_ = false;                        // guarded by mutex_
  std::thread thread_;
};

Communicator::Communicator(int rank, int size, Millis timeout)
    : rank_(rank), size_(size), timeout_(timeout) {
  TANDEM_CHECK(size >= 1, "Communicator: size must be >= 1 (got {})", size);
  TANDEM_CHECK(rank >= 0 && rank < size, "Communicator: rank {} is outside [0, {})", rank, size);
  TANDEM_CHECK(timeout.count() > 0, "Communicator: timeout must be positive (got {} ms)",
               timeout.count());
}

// Tasks still queued at destruction run (each bounded by its deadline) before
// the executor's thread joins; see Executor::~Executor.
Communicator::~Communicator() = default;

void Communicator::stop_executor() {
  std::map<Lane, std::unique_ptr<Executor>> executors;
  {
    std::lock_guard<std::mutex> lock(executors_mutex_);
    executors.swap(executors_);
  }
  executors.clear();  // each joins after running what it holds
}

Communicator::Executor& Communicator::executor(Lane lane) {
  std::lock_guard<std::mutex> lock(executors_mutex_);
  auto& slot = executors_[lane];
  if (!slot) slot = std::make_unique<Executor>();
  return *slot;
}

std::string Communicator::failure() const {
  std::lock_guard<std::mutex> lock(failure_mutex_);
  return failure_;
}

void Communicator::check_usable() const {
  if (!failed_.load(std::memory_order_acquire)) return;
  throw PeerError(fmt::format(
      "rank {}: this {} communicator is unusable after an earlier failure ({}); rebuild it", rank_,
      backend(), failure()));
}

void Communicator::abort(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(failure_mutex_);
    if (aborted_) return;
    aborted_ = true;
    if (failure_.empty()) failure_ = reason;
    failed_.store(true, std::memory_order_release);
  }
  do_abort(reason);
}

void Communicator::do_abort(const std::string&) {}

void Communicator::record_failure(const std::exception_ptr& error) {
  std::string what;
  try {
    std::rethrow_exception(error);
  } catch (const TimeoutError& e) {
    what = e.what();
  } catch (const PeerError& e) {
    what = e.what();
  } catch (...) {
    return;  // argument errors leave the communicator usable
  }
  std::lock_guard<std::mutex> lock(failure_mutex_);
  if (failure_.empty()) failure_ = std::move(what);
  failed_.store(true, std::memory_order_release);
}

std::string OpDescription::str() const {
  std::string out(name);
  if (seq > 0) out += fmt::format(" #{}", seq);
  if (peer >= 0)
    out += fmt::format(" {} rank {} tag {}", name == "recv" ? "from" : "to", peer, tag);
  if (numel >= 0) {
    double bytes = static_cast<double>(numel) * static_cast<double>(c10::elementSize(dtype));
    out += fmt::format(" ({}, {})", describe_bytes(bytes), c10::toString(dtype));
  }
  return out;
}

Millis Communicator::resolve_timeout(std::string_view name, std::optional<Millis> timeout) const {
  Millis t = timeout.value_or(timeout_);
  TANDEM_CHECK(t.count() > 0, "{}: timeout must be positive (got {} ms)", name, t.count());
  return t;
}

// Collectives are numbered in issue order (the same on every rank, so a
// number says how far each rank got); point-to-point operations are not.
template <typename Fn>
void Communicator::run_sync(Lane lane, OpDescription what, std::optional<Millis> timeout, Fn&& fn) {
  check_usable();
  Millis t = resolve_timeout(what.name, timeout);
  if (lane.kind == 0) what.seq = ++seq_;
  OpContext ctx{what.seq, what.name, what, Deadline(t)};
  // Earlier asynchronous operations of the same lane go first, to keep the
  // issue order.
  Executor* pending = nullptr;
  {
    std::lock_guard<std::mutex> lock(executors_mutex_);
    auto it = executors_.find(lane);
    if (it != executors_.end()) pending = it->second.get();
  }
  if (pending && !pending->drain(ctx.deadline)) {
    throw TimeoutError(fmt::format(
        "rank {}: {} could not start within {}: earlier asynchronous operations on this "
        "communicator are still running; wait for them first, or {}",
        rank_, ctx.description, format_duration(ctx.deadline.timeout()),
        detail::kCommTimeoutHint));
  }
  try {
    fn(ctx);
  } catch (...) {
    record_failure(std::current_exception());
    throw;
  }
}

template <typename Fn>
std::shared_ptr<Work> Communicator::run_async(Lane lane, OpDescription what,
                                              std::optional<Millis> timeout, Fn&& fn) {
  check_usable();
  // The deadline starts when the operation starts running, not when it is queued.
  Millis t = resolve_timeout(what.name, timeout);
  if (lane.kind == 0) what.seq = ++seq_;
  auto work = std::make_shared<Work>(what.str());
  executor(lane).post([this, work, what, t, fn = std::forward<Fn>(fn)]() mutable {
    std::exception_ptr error;
    try {
      check_usable();
      OpContext ctx{what.seq, what.name, what, Deadline(t)};
      fn(ctx);
    } catch (...) {
      error = std::current_exception();
      record_failure(error);
    }
    work->finish(error);
  });
  return work;
}

namespace {

OpDescription op_of(std::string_view name, const at::Tensor& t) {
  return OpDescription{name, 0, t.numel(), t.scalar_type(), -1, -1};
}

OpDescription p2p_of(std::string_view name, const at::Tensor& t, int peer, int tag) {
  return OpDescription{name, 0, t.numel(), t.scalar_type(), peer, tag};
}

}  // namespace

void Communicator::all_reduce(const at::Tensor& tensor, ReduceOp op,
                              std::optional<Millis> timeout) {
  check_comm_tensor(tensor, "all_reduce tensor");
  check_reduce_op(op, tensor.scalar_type(), "all_reduce");
  run_sync(Lane{}, op_of("all_reduce", tensor), timeout,
           [&](const OpContext& ctx) { do_all_reduce(tensor, op, ctx); });
}

void Communicator::broadcast(const at::Tensor& tensor, int root, std::optional<Millis> timeout) {
  check_comm_tensor(tensor, "broadcast tensor");
  TANDEM_CHECK(root >= 0 && root < size_, "broadcast: root {} is outside [0, {})", root, size_);
  run_sync(Lane{}, op_of("broadcast", tensor), timeout,
           [&](const OpContext& ctx) { do_broadcast(tensor, root, ctx); });
}

namespace {

void check_gather_shapes(const at::Tensor& full, const at::Tensor& shard, int size, int rank,
                         std::string_view op) {
  TANDEM_CHECK(full.scalar_type() == shard.scalar_type(), "{}: dtypes differ ({} vs {})", op,
               c10::toString(full.scalar_type()), c10::toString(shard.scalar_type()));
  auto range = shard_range(full.numel(), size, rank);
  TANDEM_CHECK(shard.numel() == range.numel,
               "{}: rank {}'s shard has {} elements but must have {} (its shard_range of the {} "
               "elements over {} ranks)",
               op, rank, shard.numel(), range.numel, full.numel(), size);
}

}  // namespace

void Communicator::all_gather(const at::Tensor& output, const at::Tensor& input,
                              std::optional<Millis> timeout) {
  check_comm_tensor(output, "all_gather output");
  check_comm_tensor(input, "all_gather input");
  check_gather_shapes(output, input, size_, rank_, "all_gather");
  run_sync(Lane{}, op_of("all_gather", output), timeout,
           [&](const OpContext& ctx) { do_all_gather(output, input, ctx); });
}

void Communicator::reduce_scatter(const at::Tensor& output, const at::Tensor& input, ReduceOp op,
                                  std::optional<Millis> timeout) {
  check_comm_tensor(output, "reduce_scatter output");
  check_comm_tensor(input, "reduce_scatter input");
  check_gather_shapes(input, output, size_, rank_, "reduce_scatter");
  check_reduce_op(op, input.scalar_type(), "reduce_scatter");
  run_sync(Lane{}, op_of("reduce_scatter", input), timeout,
           [&](const OpContext& ctx) { do_reduce_scatter(output, input, op, ctx); });
}

void Communicator::all_to_all(const at::Tensor& output, const at::Tensor& input,
                              std::optional<Millis> timeout) {
  check_comm_tensor(output, "all_to_all output");
  check_comm_tensor(input, "all_to_all input");
  TANDEM_CHECK(output.numel() == input.numel() && input.numel() % size_ == 0 &&
                   output.scalar_type() == input.scalar_type(),
               "all_to_all: input ({}) and output ({}) must have the same dtype and a length "
               "divisible by the group size {}",
               input.numel(), output.numel(), size_);
  run_sync(Lane{}, op_of("all_to_all", input), timeout,
           [&](const OpContext& ctx) { do_all_to_all(output, input, ctx); });
}

void Communicator::do_all_to_all(const at::Tensor&, const at::Tensor&, const OpContext&) {
  throw NotSupported(fmt::format("all_to_all is not supported by the {} backend", backend()));
}

void Communicator::barrier(std::optional<Millis> timeout) {
  run_sync(Lane{}, OpDescription{"barrier"}, timeout,
           [&](const OpContext& ctx) { do_barrier(ctx); });
}

namespace {

void check_peer(int peer, int rank, int size, int tag, std::string_view op) {
  TANDEM_CHECK(peer >= 0 && peer < size, "{}: peer {} is outside [0, {})", op, peer, size);
  TANDEM_CHECK(peer != rank, "{}: rank {} cannot {} itself", op, rank, op);
  TANDEM_CHECK(tag >= 0, "{}: tag must be >= 0 (got {})", op, tag);
}

}  // namespace

void Communicator::send(const at::Tensor& tensor, int dst, int tag, std::optional<Millis> timeout) {
  check_comm_tensor(tensor, "send tensor");
  check_peer(dst, rank_, size_, tag, "send");
  run_sync(Lane{1, dst}, p2p_of("send", tensor, dst, tag), timeout,
           [&](const OpContext& ctx) { do_send(tensor, dst, tag, ctx); });
}

void Communicator::recv(const at::Tensor& tensor, int src, int tag, std::optional<Millis> timeout) {
  check_comm_tensor(tensor, "recv tensor");
  check_peer(src, rank_, size_, tag, "recv");
  run_sync(Lane{2, src}, p2p_of("recv", tensor, src, tag), timeout,
           [&](const OpContext& ctx) { do_recv(tensor, src, tag, ctx); });
}

std::shared_ptr<Work> Communicator::all_reduce_async(const at::Tensor& tensor, ReduceOp op,
                                                     std::optional<Millis> timeout) {
  check_comm_tensor(tensor, "all_reduce tensor");
  check_reduce_op(op, tensor.scalar_type(), "all_reduce");
  return run_async(Lane{}, op_of("all_reduce", tensor), timeout,
                   [this, tensor, op](const OpContext& ctx) { do_all_reduce(tensor, op, ctx); });
}

std::shared_ptr<Work> Communicator::broadcast_async(const at::Tensor& tensor, int root,
                                                    std::optional<Millis> timeout) {
  check_comm_tensor(tensor, "broadcast tensor");
  TANDEM_CHECK(root >= 0 && root < size_, "broadcast: root {} is outside [0, {})", root, size_);
  return run_async(Lane{}, op_of("broadcast", tensor), timeout,
                   [this, tensor, root](const OpContext& ctx) { do_broadcast(tensor, root, ctx); });
}

std::shared_ptr<Work> Communicator::all_gather_async(const at::Tensor& output,
                                                     const at::Tensor& input,
                                                     std::optional<Millis> timeout) {
  check_comm_tensor(output, "all_gather output");
  check_comm_tensor(input, "all_gather input");
  check_gather_shapes(output, input, size_, rank_, "all_gather");
  return run_async(
      Lane{}, op_of("all_gather", output), timeout,
      [this, output, input](const OpContext& ctx) { do_all_gather(output, input, ctx); });
}

std::shared_ptr<Work> Communicator::reduce_scatter_async(const at::Tensor& output,
                                                         const at::Tensor& input, ReduceOp op,
                                                         std::optional<Millis> timeout) {
  check_comm_tensor(output, "reduce_scatter output");
  check_comm_tensor(input, "reduce_scatter input");
  check_gather_shapes(input, output, size_, rank_, "reduce_scatter");
  check_reduce_op(op, input.scalar_type(), "reduce_scatter");
  return run_async(Lane{}, op_of("reduce_scatter", input), timeout,
                   [this, output, input, op](const OpContext& ctx) {
                     do_reduce_scatter(output, input, op, ctx);
                   });
}

std::shared_ptr<Work> Communicator::send_async(const at::Tensor& tensor, int dst, int tag,
                                               std::optional<Millis> timeout) {
  check_comm_tensor(tensor, "send tensor");
  check_peer(dst, rank_, size_, tag, "send");
  return run_async(
      Lane{1, dst}, p2p_of("send", tensor, dst, tag), timeout,
      [this, tensor, dst, tag](const OpContext& ctx) { do_send(tensor, dst, tag, ctx); });
}

std::shared_ptr<Work> Communicator::recv_async(const at::Tensor& tensor, int src, int tag,
                                               std::optional<Millis> timeout) {
  check_comm_tensor(tensor, "recv tensor");
  check_peer(src, rank_, size_, tag, "recv");
  return run_async(
      Lane{2, src}, p2p_of("recv", tensor, src, tag), timeout,
      [this, tensor, src, tag](const OpContext& ctx) { do_recv(tensor, src, tag, ctx); });
}

std::shared_ptr<Communicator> Communicator::split(int color, int key,
                                                  std::optional<Millis> timeout) {
  // Every rank learns every (color, key); members are ordered by (key, rank).
  at::Tensor mine = at::empty({2}, at::kLong);
  mine[0] = static_cast<int64_t>(color < 0 ? -1 : color);
  mine[1] = static_cast<int64_t>(key);
  at::Tensor all = at::empty({2 * size_}, at::kLong);
  all_gather(all, mine, timeout);
  const int64_t* v = all.data_ptr<int64_t>();
  std::vector<int> members;
  if (color >= 0) {
    for (int r = 0; r < size_; ++r) {
      if (v[2 * r] == color) members.push_back(r);
    }
    std::stable_sort(members.begin(), members.end(),
                     [&](int a, int b) { return v[2 * a + 1] < v[2 * b + 1]; });
  }
  uint64_t split_id = ++split_count_;
  std::string name = fmt::format("split{}.c{}", split_id, color);
  std::shared_ptr<Communicator> out;
  run_sync(Lane{}, OpDescription{"split"}, timeout,
           [&](const OpContext& ctx) { out = do_split(members, name, ctx); });
  return out;
}

std::shared_ptr<Communicator> Communicator::new_group(const std::vector<int>& ranks,
                                                      std::optional<Millis> timeout) {
  TANDEM_CHECK(!ranks.empty(), "new_group: the rank list is empty");
  for (size_t i = 0; i < ranks.size(); ++i) {
    TANDEM_CHECK(ranks[i] >= 0 && ranks[i] < size_, "new_group: rank {} is outside [0, {})",
                 ranks[i], size_);
    TANDEM_CHECK(i == 0 || ranks[i] > ranks[i - 1],
                 "new_group: ranks must be strictly ascending and unique (got {} after {})",
                 ranks[i], ranks[i - 1]);
  }
  auto it = std::find(ranks.begin(), ranks.end(), rank_);
  int key = it == ranks.end() ? 0 : static_cast<int>(it - ranks.begin());
  return split(it == ranks.end() ? -1 : 0, key, timeout);
}

}  // namespace tandem
