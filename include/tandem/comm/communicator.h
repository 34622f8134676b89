// tandem::Communicator: a group of ranks and the collective and point-to-point
// operations among them. Every layer above talks to this class only; the
// backends (shared memory, Gloo, MPI, hierarchical) live behind it.
//
// Collective: every member calls each collective in the same order with
// tensors of matching dtype and length. Not thread-safe: issue operations from
// one thread at a time (Work handles may be waited on from any thread).
//
// Tensors must be CPU and contiguous, of any length including 0, and of one
// of the dtypes LibTorch has on CPU: bool, uint8, int8, int16, int32, int64,
// float16, bfloat16, float32, float64, complex64, complex128. Every operation
// moves every one of them; the reductions take those where the op is
// defined: sum, avg and product are not defined for bool (max and min are
// its logical or and and), min and max not for complex dtypes; the other
// pairs throw InvalidArgument naming op and dtype. Operations work in place on
// the tensors' storage. Every blocking call ends by its timeout (the call's,
// or the communicator's default): a TimeoutError names the operation, this
// rank and the peers it waited for. After a TimeoutError or PeerError the
// communicator is unusable and every later call throws PeerError.
//
// Uneven lengths: reduce_scatter and all_gather split a length-L vector over
// the ranks with shard_range(L, size(), r): the first L % size() ranks own
// ceil(L / size()) elements, the others floor(L / size()). reduce_scatter's
// output on rank r has shard_range(L, size(), r).numel elements; all_gather's
// input on rank r likewise, and its output has L. When L divides evenly this is
// the usual equal-chunk layout. all_gather's input may be this rank's own
// slice of its output (gathering in place, as ZeRO's flat buffers do); no
// other overlap between an operation's input and output is allowed.
#pragma once

#include <ATen/core/Tensor.h>
#include <fmt/format.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tandem/comm/work.h"
#include "tandem/core/deadline.h"

namespace tandem {

enum class ReduceOp { kSum, kAvg, kMin, kMax, kProduct };
std::string_view to_string(ReduceOp op);

// Integer tensors under kAvg are summed, then divided with truncation toward
// zero (as torch.div(..., rounding_mode="trunc")); integer sums and products
// wrap around.

struct ShardRange {
  int64_t offset = 0;
  int64_t numel = 0;
};

// The slice of a length-`numel` vector that `rank` owns among `world_size`
// ranks (see the header comment). Pure; throws InvalidArgument on bad input.
ShardRange shard_range(int64_t numel, int world_size, int rank);

// What an operation is, for messages: "all_reduce #12 (4.0 MiB, float32)",
// "send to rank 1 tag 7 (16 B, int64)". Cheap to build; the text is made
// only when a message needs it (it formats with fmt, or through str()).
struct OpDescription {
  std::string_view name;  // "all_reduce", "barrier", ...
  uint64_t seq = 0;       // collectives: 1, 2, ... in issue order; 0 for send/recv
  int64_t numel = -1;     // -1: no tensor
  at::ScalarType dtype = at::kFloat;
  int peer = -1;  // send/recv: the other rank
  int tag = -1;
  std::string str() const;
};

// What an operation knows about itself while it runs; backends use it for
// deadlines and messages.
struct OpContext {
  uint64_t seq = 0;           // collectives: 1, 2, ... in issue order; 0 for send/recv
  std::string_view name;      // "all_reduce", "barrier", ...
  OpDescription description;  // formats as "all_reduce #12 (4.0 MiB, float32)"
  Deadline deadline;
};

class Communicator : public std::enable_shared_from_this<Communicator> {
 public:
  Communicator(int rank, int size, Millis timeout);
  virtual ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // The default timeout of every blocking call on this communicator.
  Millis timeout() const { return timeout_; }
  // "shm", "gloo", "mpi", "hier(shm+gloo)".
  virtual std::string backend() const = 0;

  // Collective. Reduces `tensor` over all ranks; every rank ends with the result.
  void all_reduce(const at::Tensor& tensor, ReduceOp op = ReduceOp::kSum,
                  std::optional<Millis> timeout = {});
  // Collective. Copies `root`'s tensor into every rank's `tensor`.
  void broadcast(const at::Tensor& tensor, int root, std::optional<Millis> timeout = {});
  // Collective. Concatenates every rank's `input` (its shard_range slice of a
  // length output.numel() vector) into `output` on every rank.
  void all_gather(const at::Tensor& output, const at::Tensor& input,
                  std::optional<Millis> timeout = {});
  // Collective. Reduces `input` (same length L on every rank) over all ranks and
  // leaves rank r's shard_range(L, size, r) slice of the result in `output`.
  void reduce_scatter(const at::Tensor& output, const at::Tensor& input,
                      ReduceOp op = ReduceOp::kSum, std::optional<Millis> timeout = {});
  // Collective. `input` and `output` hold size() equal chunks; chunk j of
  // `input` goes to rank j, and chunk i of `output` comes from rank i. Throws
  // NotSupported on backends without it (see backend()).
  void all_to_all(const at::Tensor& output, const at::Tensor& input,
                  std::optional<Millis> timeout = {});
  // Collective. Returns when every rank has entered the barrier.
  void barrier(std::optional<Millis> timeout = {});
  // Point-to-point. Blocks until `tensor` may be reused (send) or holds the
  // message from `src` with the same `tag` (recv). Tags are >= 0.
  void send(const at::Tensor& tensor, int dst, int tag = 0, std::optional<Millis> timeout = {});
  void recv(const at::Tensor& tensor, int src, int tag = 0, std::optional<Millis> timeout = {});

  // Asynchronous forms. They return at once. Collectives run in issue order on
  // this communicator's background thread; sends to one peer run in issue
  // order on a thread of their own, and so do receives from one peer, so that
  // a send and a receive (or collectives and point-to-point) progress
  // together, as with MPI_Isend/MPI_Irecv. Keep the tensors alive and
  // untouched until wait() returns.
  std::shared_ptr<Work> all_reduce_async(const at::Tensor& tensor, ReduceOp op = ReduceOp::kSum,
                                         std::optional<Millis> timeout = {});
  std::shared_ptr<Work> broadcast_async(const at::Tensor& tensor, int root,
                                        std::optional<Millis> timeout = {});
  std::shared_ptr<Work> all_gather_async(const at::Tensor& output, const at::Tensor& input,
                                         std::optional<Millis> timeout = {});
  std::shared_ptr<Work> reduce_scatter_async(const at::Tensor& output, const at::Tensor& input,
                                             ReduceOp op = ReduceOp::kSum,
                                             std::optional<Millis> timeout = {});
  std::shared_ptr<Work> send_async(const at::Tensor& tensor, int dst, int tag = 0,
                                   std::optional<Millis> timeout = {});
  std::shared_ptr<Work> recv_async(const at::Tensor& tensor, int src, int tag = 0,
                                   std::optional<Millis> timeout = {});

  // Collective. Splits this group like MPI_Comm_split: ranks passing the same
  // color >= 0 form a new communicator, ordered by (key, rank); a rank passing
  // a negative color gets nullptr. Every rank calls it, in the same order.
  std::shared_ptr<Communicator> split(int color, int key = 0, std::optional<Millis> timeout = {});
  // Collective. A communicator of `ranks` (ranks of this group, ascending
  // order defines the new ranks); nullptr on ranks not listed. Every rank of
  // this group calls it with the same list.
  std::shared_ptr<Communicator> new_group(const std::vector<int>& ranks,
                                          std::optional<Millis> timeout = {});

  // Why the communicator became unusable, or empty while it is healthy.
  std::string failure() const;

  // Ends this communicator from outside, e.g. when elastic membership learns
  // that a peer died or stalled: it becomes unusable with `reason` as its
  // failure, and the operations running or queued on it end with PeerError
  // naming `reason` where the backend can wake them (shm: at once, on every
  // rank of the group; gloo and mpi: at their own peer detection or
  // deadline). Thread-safe; later calls keep the first reason.
  void abort(const std::string& reason);

 protected:
  // Backend implementations. Each runs synchronously and must return or throw
  // by ctx.deadline (TimeoutError naming the peers still missing, PeerError
  // naming a peer that died). Arguments are already validated. Collectives are
  // called one at a time, but do_send (one thread per destination) and do_recv
  // (one thread per source) may run concurrently with each other and with a
  // collective: backends keep point-to-point state apart from collective state.
  virtual void do_all_reduce(const at::Tensor& tensor, ReduceOp op, const OpContext& ctx) = 0;
  virtual void do_broadcast(const at::Tensor& tensor, int root, const OpContext& ctx) = 0;
  virtual void do_all_gather(const at::Tensor& output, const at::Tensor& input,
                             const OpContext& ctx) = 0;
  virtual void do_reduce_scatter(const at::Tensor& output, const at::Tensor& input, ReduceOp op,
                                 const OpContext& ctx) = 0;
  virtual void do_all_to_all(const at::Tensor& output, const at::Tensor& input,
                             const OpContext& ctx);
  virtual void do_barrier(const OpContext& ctx) = 0;
  virtual void do_send(const at::Tensor& tensor, int dst, int tag, const OpContext& ctx) = 0;
  virtual void do_recv(const at::Tensor& tensor, int src, int tag, const OpContext& ctx) = 0;
  // Builds the communicator of `members` (ranks of this group in new-rank
  // order; empty on ranks outside any new group, which return nullptr). Called
  // on every rank of this group, in the same order; `name` is unique per split
  // and identical on the members.
  virtual std::shared_ptr<Communicator> do_split(const std::vector<int>& members,
                                                 const std::string& name, const OpContext& ctx) = 0;

  // The backend's part of abort(): wake this rank's waits (and, where the
  // transport allows, the peers'). Called once, from any thread. Default:
  // nothing to wake.
  virtual void do_abort(const std::string& reason);

  // Runs every queued asynchronous operation to its end (each is bounded by
  // its deadline) and stops the background thread. Backend destructors call
  // it first, so that no queued operation runs on a half-destroyed object.
  void stop_executor();

 private:
  class Executor;
  // Which ordered lane an operation runs on: collectives, or sends to / receives
  // from one peer.
  struct Lane {
    int kind = 0;  // 0: collective, 1: send, 2: recv
    int peer = -1;
    auto operator<=>(const Lane&) const = default;
  };
  Executor& executor(Lane lane);
  template <typename Fn>
  void run_sync(Lane lane, OpDescription what, std::optional<Millis> timeout, Fn&& fn);
  template <typename Fn>
  std::shared_ptr<Work> run_async(Lane lane, OpDescription what, std::optional<Millis> timeout,
                                  Fn&& fn);
  Millis resolve_timeout(std::string_view name, std::optional<Millis> timeout) const;
  void check_usable() const;
  void record_failure(const std::exception_ptr& error);

  const int rank_;
  const int size_;
  const Millis timeout_;
  std::atomic<uint64_t> seq_{0};
  uint64_t split_count_ = 0;
  std::mutex executors_mutex_;
  std::map<Lane, std::unique_ptr<Executor>> executors_;  // guarded by executors_mutex_; lazy
  std::atomic<bool> failed_{false};  // set once failure_ is; read without the lock
  mutable std::mutex failure_mutex_;
  std::string failure_;  // guarded by failure_mutex_
  bool aborted_ = false;  // abort() ran; guarded by failure_mutex_
};

// Checks that `t` is a tensor every operation accepts (CPU, contiguous,
// supported dtype); `what` names it in the message ("all_reduce tensor").
// Throws InvalidArgument. Pure.
void check_comm_tensor(const at::Tensor& t, std::string_view what);

// Checks that `op` is defined for `dtype` (see the header comment); `what`
// names the operation in the message ("all_reduce"). Throws InvalidArgument.
// Pure.
void check_reduce_op(ReduceOp op, at::ScalarType dtype, std::string_view what);

}  // namespace tandem

template <>
struct fmt::formatter<tandem::OpDescription> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(const tandem::OpDescription& d, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(d.str(), ctx);
  }
};
