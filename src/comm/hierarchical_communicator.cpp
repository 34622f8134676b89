// The hierarchical communicator: the algorithms of
// comm/algorithms/hierarchical.h over a local and a cross communicator, with
// a flat global one for everything else. See Note [Hierarchical layout] in
// comm/algorithms/hierarchical.cpp.
#include <ATen/ops/full.h>
#include <fmt/format.h>

#include <algorithm>

#include "comm/algorithms/hierarchical.h"
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
    detail::hierarchical_all_reduce(*local_, *cross_, t, op, ctx);
  }
  void do_broadcast(const at::Tensor& t, int root, const OpContext& ctx) override {
    detail::hierarchical_broadcast(*local_, *cross_, t, root, ctx);
  }
  void do_all_gather(const at::Tensor& out, const at::Tensor& in, const OpContext& ctx) override {
    detail::hierarchical_all_gather(*local_, *cross_, out, in, ctx);
  }
  void do_reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op,
                         const OpContext& ctx) override {
    detail::hierarchical_reduce_scatter(*local_, *cross_, out, in, op, ctx);
  }

  void do_all_to_all(const at::Tensor& out, const at::Tensor& in, const OpContext& ctx) override {
    global_->all_to_all(out, in, detail::time_left(ctx));
  }
  void do_abort(const std::string& reason) override {
    local_->abort(reason);
    cross_->abort(reason);
    global_->abort(reason);
  }
  void do_barrier(const OpContext& ctx) override { global_->barrier(detail::time_left(ctx)); }
  void do_send(const at::Tensor& t, int dst, int tag, const OpContext& ctx) override {
    global_->send(t, dst, tag, detail::time_left(ctx));
  }
  void do_recv(const at::Tensor& t, int src, int tag, const OpContext& ctx) override {
    global_->recv(t, src, tag, detail::time_left(ctx));
  }

  // Sub-groups are flat (the global backend's): their members need not
  // form whole hosts.
  std::shared_ptr<Communicator> do_split(const std::vector<int>& members, const std::string&,
                                         const OpContext& ctx) override {
    if (members.empty()) return global_->split(-1, 0, detail::time_left(ctx));
    auto it = std::find(members.begin(), members.end(), rank());
    return global_->split(0, static_cast<int>(it - members.begin()), detail::time_left(ctx));
  }

 private:
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
