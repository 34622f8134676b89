// Note [Hierarchical layout]
// Ranks are numbered host by host (host h holds world ranks h*L .. h*L+L-1,
// as torchrun and mpirun assign them), every host has the same number L of
// local ranks, `local` connects the ranks of one host (shared memory) and
// `cross` connects the ranks with the same local rank across hosts. Then an
// all_reduce is: reduce_scatter within the host (each local rank reduces its
// 1/L slice), all_reduce of that slice across hosts (L cross groups at once,
// each moving 1/L of the bytes), all_gather within the host. Cross-host
// traffic per rank is 1/L of a flat ring's. init() checks the layout and
// falls back to a flat communicator when it does not hold.
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <fmt/format.h>

#include <algorithm>

#include "comm/algorithms/ring.h"
#include "tandem/comm/backend.h"
#include "tandem/core/check.h"

namespace tandem {
namespace {

class HierarchicalCommunicator final : public Communicator {
 public:
  HierarchicalCommunicator(int rank, int size, std::shared_ptr<Communicator> local,
                           std::shared_ptr<Communicator> cross,
                           std::shared_ptr<Communicator> global, Millis timeout)
      : Communicator(rank, size, timeout),
        local_(std::move(local)),
        cross_(std::move(cross)),
        global_(std::move(global)) {
    TANDEM_CHECK(local_ && cross_ && global_, "hierarchical communicator: a part is null");
    TANDEM_CHECK(local_->size() * cross_->size() == size && global_->size() == size &&
                     global_->rank() == rank,
                 "hierarchical communicator: {} local x {} cross ranks do not make a world of {}",
                 local_->size(), cross_->size(), size);
    // Every rank learns whether any rank's layout is off, so all throw alike.
    bool mine_ok = rank == cross_->rank() * local_->size() + local_->rank();
    at::Tensor bad = at::full({1}, mine_ok ? 0 : 1, at::kInt);
    global_->all_reduce(bad, ReduceOp::kMax, timeout);
    TANDEM_CHECK(bad.item<int>() == 0,
                 "hierarchical communicator: ranks are not numbered host by host (rank {} is host "
                 "{} x {} + local rank {}{}); use a flat communicator",
                 rank, cross_->rank(), local_->size(), local_->rank(),
                 mine_ok ? ", but another rank's position does not fit" : "");
  }

  ~HierarchicalCommunicator() override { stop_executor(); }

  std::string backend() const override {
    return fmt::format("hier({}+{})", local_->backend(), cross_->backend());
  }

 protected:
  void do_all_reduce(const at::Tensor& t, ReduceOp op, const OpContext& ctx) override {
    const int lsize = local_->size();
    // Averages are sums until the end, so integer truncation happens once.
    ReduceOp part = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
    auto mine = shard_range(t.numel(), lsize, local_->rank());
    at::Tensor slice = at::empty({mine.numel}, t.options());
    local_->reduce_scatter(slice, t, part, left(ctx));
    cross_->all_reduce(slice, part, left(ctx));
    local_->all_gather(t, slice, left(ctx));
    if (op == ReduceOp::kAvg) detail::finish_average(t, size());
  }

  void do_broadcast(const at::Tensor& t, int root, const OpContext& ctx) override {
    const int lsize = local_->size();
    int root_host = root / lsize;
    int root_local = root % lsize;
    // The root's cross group carries it to every host, then each host
    // spreads it from the rank with the root's local index.
    if (local_->rank() == root_local) cross_->broadcast(t, root_host, left(ctx));
    local_->broadcast(t, root_local, left(ctx));
  }

  // Host segments: the world's shard_range slices of one host's ranks are
  // contiguous, and shard_range within the host reproduces them (the ranks
  // with one extra element come first in both).
  void do_all_gather(const at::Tensor& out, const at::Tensor& in, const OpContext& ctx) override {
    const int lsize = local_->size();
    const int hosts = cross_->size();
    const int64_t n = out.numel();
    auto seg = [&](int h) {
      auto first = shard_range(n, size(), h * lsize);
      auto last = shard_range(n, size(), h * lsize + lsize - 1);
      return ShardRange{first.offset, last.offset + last.numel - first.offset};
    };
    int64_t max_seg = seg(0).numel;  // host 0 holds the longest segment
    at::Tensor padded = at::empty({max_seg * hosts}, out.options());
    auto my = seg(cross_->rank());
    at::Tensor my_block = padded.narrow(0, cross_->rank() * max_seg, my.numel);
    local_->all_gather(my_block, in, left(ctx));
    // Each cross group gathers every host's whole segment: L times the
    // cross-host bytes of splitting the segments over the L cross groups,
    // but one step simpler. all_reduce, the op training leans on, is optimal.
    at::Tensor block = padded.narrow(0, cross_->rank() * max_seg, max_seg).clone();
    cross_->all_gather(padded, block, left(ctx));
    for (int h = 0; h < hosts; ++h) {
      auto s = seg(h);
      out.narrow(0, s.offset, s.numel).copy_(padded.narrow(0, h * max_seg, s.numel));
    }
  }

  void do_reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op,
                         const OpContext& ctx) override {
    // A full all_reduce, then this rank's slice: twice the bytes of a true
    // hierarchical reduce-scatter, but correct for every layout.
    at::Tensor full = in.clone();
    do_all_reduce(full, op, ctx);
    auto mine = shard_range(in.numel(), size(), rank());
    out.copy_(full.narrow(0, mine.offset, mine.numel));
  }

  void do_all_to_all(const at::Tensor& out, const at::Tensor& in, const OpContext& ctx) override {
    global_->all_to_all(out, in, left(ctx));
  }
  void do_barrier(const OpContext& ctx) override { global_->barrier(left(ctx)); }
  void do_send(const at::Tensor& t, int dst, int tag, const OpContext& ctx) override {
    global_->send(t, dst, tag, left(ctx));
  }
  void do_recv(const at::Tensor& t, int src, int tag, const OpContext& ctx) override {
    global_->recv(t, src, tag, left(ctx));
  }

  // Sub-groups are flat (the global backend's): their members need not
  // form whole hosts.
  std::shared_ptr<Communicator> do_split(const std::vector<int>& members, const std::string&,
                                         const OpContext& ctx) override {
    if (members.empty()) return global_->split(-1, 0, left(ctx));
    auto it = std::find(members.begin(), members.end(), rank());
    return global_->split(0, static_cast<int>(it - members.begin()), left(ctx));
  }

 private:
  static Millis left(const OpContext& ctx) { return std::max(ctx.deadline.remaining(), Millis(1)); }

  std::shared_ptr<Communicator> local_;
  std::shared_ptr<Communicator> cross_;
  std::shared_ptr<Communicator> global_;
};

}  // namespace

std::shared_ptr<Communicator> make_hierarchical_communicator(int rank, int size,
                                                             std::shared_ptr<Communicator> local,
                                                             std::shared_ptr<Communicator> cross,
                                                             std::shared_ptr<Communicator> global,
                                                             Millis timeout) {
  return std::make_shared<HierarchicalCommunicator>(rank, size, std::move(local), std::move(cross),
                                                    std::move(global), timeout);
}

}  // namespace tandem
