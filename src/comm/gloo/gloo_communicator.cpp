// The Gloo backend: LibTorch's c10d::ProcessGroupGloo behind tandem's
// Communicator. Gloo supplies all_reduce, broadcast, all_to_all, barrier and
// send/recv; reduce_scatter and the flat, uneven all_gather, which LibTorch
// 1.13's Gloo lacks, run as rings over its send/recv (comm/algorithms/ring.h).
// Gloo knows only some dtypes (see gloo_operand); operations that only move
// data see every tensor as bytes.
#include <ATen/ops/empty.h>
#include <ATen/ops/view_as_real.h>
#include <fmt/format.h>

#include <cstdlib>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "comm/algorithms/reduce_ops.h"
#include "comm/algorithms/ring.h"
#include "comm/c10d_logging.h"
#include "comm/gloo/gloo_store_adapter.h"
#include "comm/join.h"
#include "comm/progress_board.h"
#include "comm/timeout_hints.h"
#include "tandem/comm/backend.h"
#include "tandem/core/check.h"
#include "tandem/core/log.h"

namespace tandem {
namespace {

// Ring steps use tags above every user tag (users get [0, 2^30)).
constexpr int kRingTagBase = 1 << 30;

c10d::ReduceOp to_c10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return c10d::ReduceOp::SUM;
    case ReduceOp::kMin:
      return c10d::ReduceOp::MIN;
    case ReduceOp::kMax:
      return c10d::ReduceOp::MAX;
    case ReduceOp::kProduct:
      return c10d::ReduceOp::PRODUCT;
  }
  return c10d::ReduceOp::SUM;
}

std::string first_line(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

// A tensor Gloo can reduce in place of `t`. LibTorch 1.13's Gloo reduces
// uint8, int8, int32, int64, float16, float32 and float64. bool goes as
// uint8 (max and min of 0/1 are or and and), complex as pairs of reals
// (right for sums only; products take a ring), bfloat16 in float32 (exact
// for bfloat16 inputs, rounded once at the end) and int16 in int32 (wrapping
// the int32 result back to int16 gives int16's wrapped sum and product).
struct GlooOperand {
  at::Tensor tensor;
  bool copy = false;  // a converted copy, to be written back into `t`
};

GlooOperand gloo_operand(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBool:
      return {t.view(at::kByte), false};
    case at::kComplexFloat:
    case at::kComplexDouble:
      return {at::view_as_real(t), false};
    case at::kBFloat16:
      return {t.to(at::kFloat), true};
    case at::kShort:
      return {t.to(at::kInt), true};
    default:
      return {t, false};
  }
}

// Operations that only move data see every tensor as bytes, which Gloo
// moves whatever they hold. A contiguous tensor's elements lie densely in
// order, but a dimension of size 1 may carry any stride, which view(dtype)
// refuses: as_strided gives the plain flat view first.
at::Tensor as_gloo_bytes(const at::Tensor& t) {
  return t.as_strided({t.numel()}, {1}).view(at::kByte);
}

std::shared_ptr<::gloo::transport::Device> make_device(const std::string& host) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  if (!host.empty()) return c10d::ProcessGroupGloo::createDeviceForHostname(host);
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

class GlooCommunicator final : public Communicator, private detail::RingTransport {
 public:
  GlooCommunicator(const BackendOptions& o, std::string host)
      : Communicator(o.rank, o.size, o.timeout),
        store_(o.store),
        group_name_(o.group_name),
        host_(std::move(host)) {
    TANDEM_CHECK(store_ != nullptr, "make_gloo_communicator: BackendOptions::store is null");
    detail::quiet_c10d_logs();
    detail::join_group(*store_, o.rank, o.size, o.timeout,
                       fmt::format("gloo setup of group '{}'", group_name_),
                       detail::kCommTimeoutHint);
    auto opts = c10d::ProcessGroupGloo::Options::create(o.timeout);
    try {
      detail::QuietC10dWarnings quiet;
      opts->devices.push_back(make_device(host_));
      auto adapter =
          c10::make_intrusive<detail::GlooStoreAdapter>(with_prefix(store_, "gloo"), o.timeout);
      pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(adapter, o.rank, o.size, opts);
    } catch (const TimeoutError& e) {  // from the store, which cannot name the setting
      throw TimeoutError(fmt::format("rank {}: gloo setup of group '{}': {}; {}", o.rank,
                                     group_name_, e.what(), detail::kCommTimeoutHint));
    } catch (const tandem::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw PeerError(fmt::format("rank {}: gloo setup of group '{}' failed: {}", o.rank,
                                  group_name_, first_line(e.what())));
    }
    board_ = std::make_unique<detail::ProgressBoard>(with_prefix(store_, "board"), o.rank, o.size);
  }

  ~GlooCommunicator() override { stop_executor(); }

  std::string backend() const override { return "gloo"; }

 protected:
  void do_all_reduce(const at::Tensor& t, ReduceOp op, const OpContext& ctx) override {
    board_->enter(ctx.seq);
    if (t.numel() == 0) return;
    if (op == ReduceOp::kProduct && at::isComplexType(t.scalar_type())) {
      ring_all_reduce(t, op, ctx);
      return;
    }
    c10d::AllreduceOptions opts;
    opts.reduceOp = to_c10d(op);
    opts.timeout = gloo_timeout(ctx);
    GlooOperand x = gloo_operand(t);
    std::vector<at::Tensor> v{x.tensor};
    wait(ctx, [&] { return pg_->allreduce(v, opts); });
    // Floats average before they are rounded back; integers wrap first, so
    // that their average is the wrapped sum's, as on every backend.
    const bool integral = at::isIntegralType(t.scalar_type(), /*includeBool=*/false);
    if (op == ReduceOp::kAvg && !integral) detail::finish_average(x.tensor, size());
    if (x.copy) t.copy_(x.tensor);
    if (op == ReduceOp::kAvg && integral) detail::finish_average(t, size());
  }

  void do_broadcast(const at::Tensor& t, int root, const OpContext& ctx) override {
    board_->enter(ctx.seq);
    if (t.numel() == 0) return;
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = gloo_timeout(ctx);
    std::vector<at::Tensor> v{as_gloo_bytes(t)};
    wait(ctx, [&] { return pg_->broadcast(v, opts); });
  }

  void do_all_gather(const at::Tensor& out, const at::Tensor& in, const OpContext& ctx) override {
    board_->enter(ctx.seq);
    detail::ring_all_gather(*this, rank(), size(), out, in, ring_tag(ctx), ctx);
  }

  void do_reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op,
                         const OpContext& ctx) override {
    board_->enter(ctx.seq);
    detail::ring_reduce_scatter(*this, rank(), size(), out, in, op, ring_tag(ctx), ctx);
  }

  void do_all_to_all(const at::Tensor& out, const at::Tensor& in, const OpContext& ctx) override {
    board_->enter(ctx.seq);
    if (in.numel() == 0) return;
    c10d::AllToAllOptions opts;
    opts.timeout = gloo_timeout(ctx);
    at::Tensor o = as_gloo_bytes(out);
    at::Tensor i = as_gloo_bytes(in);
    std::vector<int64_t> counts;  // empty: equal splits
    wait(ctx, [&] { return pg_->alltoall_base(o, i, counts, counts, opts); });
  }

  void do_barrier(const OpContext& ctx) override {
    board_->enter(ctx.seq);
    c10d::BarrierOptions opts;
    opts.timeout = gloo_timeout(ctx);
    wait(ctx, [&] { return pg_->barrier(opts); });
  }

  void do_send(const at::Tensor& t, int dst, int tag, const OpContext& ctx) override {
    check_user_tag(tag);
    if (t.numel() == 0) return;
    std::vector<at::Tensor> v{as_gloo_bytes(t)};
    wait(
        ctx, [&] { return pg_->send(v, dst, tag); }, dst);
  }

  void do_recv(const at::Tensor& t, int src, int tag, const OpContext& ctx) override {
    check_user_tag(tag);
    if (t.numel() == 0) return;
    std::vector<at::Tensor> v{as_gloo_bytes(t)};
    wait(
        ctx, [&] { return pg_->recv(v, src, tag); }, src);
  }

  std::shared_ptr<Communicator> do_split(const std::vector<int>& members, const std::string& name,
                                         const OpContext&) override {
    auto it = std::find(members.begin(), members.end(), rank());
    if (it == members.end()) return nullptr;
    BackendOptions o;
    o.rank = static_cast<int>(it - members.begin());
    o.size = static_cast<int>(members.size());
    o.store = with_prefix(store_, name);
    o.timeout = timeout();
    o.group_name = group_name_ + "/" + name;
    return make_gloo_communicator(o, host_);
  }

 private:
  // RingTransport: both directions start at once, then both are awaited.
  void send_recv(const at::Tensor& out, int dst, const at::Tensor& in, int src, int tag,
                 const OpContext& ctx) override {
    std::vector<at::Tensor> send_v{as_gloo_bytes(out)};
    std::vector<at::Tensor> recv_v{as_gloo_bytes(in)};
    c10::intrusive_ptr<c10d::Work> s;
    c10::intrusive_ptr<c10d::Work> r;
    if (in.numel() > 0) wait_start(ctx, [&] { r = pg_->recv(recv_v, src, tag); });
    if (out.numel() > 0) wait_start(ctx, [&] { s = pg_->send(send_v, dst, tag); });
    if (s)
      wait(
          ctx, [&] { return s; }, dst);
    if (r)
      wait(
          ctx, [&] { return r; }, src);
  }

  // A reduce-scatter and an all-gather around the ring, for the reductions
  // Gloo cannot do (complex products).
  void ring_all_reduce(const at::Tensor& t, ReduceOp op, const OpContext& ctx) {
    auto mine = shard_range(t.numel(), size(), rank());
    at::Tensor shard = at::empty({mine.numel}, t.options());
    detail::ring_reduce_scatter(*this, rank(), size(), shard, t, op, ring_tag(ctx), ctx);
    detail::ring_all_gather(*this, rank(), size(), t, shard, ring_tag(ctx), ctx);
  }

  static int ring_tag(const OpContext& ctx) {
    return kRingTagBase + static_cast<int>(ctx.seq % (1u << 20));
  }

  void check_user_tag(int tag) const {
    TANDEM_CHECK(tag < kRingTagBase, "gloo: tag {} is too large; user tags must be below 2^30",
                 tag);
  }

  Millis gloo_timeout(const OpContext& ctx) const {
    return std::max(ctx.deadline.remaining(), Millis(1));
  }

  // Starting an operation can itself throw (a broken pair): map it.
  template <typename Fn>
  void wait_start(const OpContext& ctx, Fn&& fn) {
    try {
      fn();
    } catch (const tandem::Error&) {
      throw;
    } catch (const std::exception& e) {
      fail(ctx, e.what(), -1);
    }
  }

  // Starts the operation `start` returns and waits for it, bounded by the
  // op's deadline (plus a margin: Gloo's own timeout normally fires first).
  template <typename Start>
  void wait(const OpContext& ctx, Start&& start, int peer = -1) {
    try {
      auto work = start();
      work->wait(ctx.deadline.remaining() + Millis(2000));
    } catch (const tandem::Error&) {
      throw;
    } catch (const std::exception& e) {
      fail(ctx, e.what(), peer);
    }
  }

  // Gloo reports every failure as a generic exception; its text tells a
  // timeout from a broken link from anything else.
  [[noreturn]] void fail(const OpContext& ctx, const std::string& what, int peer) {
    std::string cause = first_line(what);
    bool timed_out = ctx.deadline.expired() || cause.find("imed out") != std::string::npos;
    bool link_broke = cause.find("onnection") != std::string::npos ||
                      cause.find("Broken pipe") != std::string::npos ||
                      cause.find("closed") != std::string::npos;
    if (!timed_out && !link_broke) {
      throw Error(fmt::format("rank {}: {} on gloo group '{}' failed: {}", rank(), ctx.description,
                              group_name_, cause));
    }
    std::string peers =
        peer >= 0 ? fmt::format("waiting for rank {}", peer) : board_->describe_peers(ctx.seq);
    if (timed_out) {
      throw TimeoutError(fmt::format(
          "rank {}: {} on gloo group '{}' timed out after {}: {}; read those ranks' logs, or {} "
          "[gloo: {}]",
          rank(), ctx.description, group_name_, format_duration(ctx.deadline.elapsed()), peers,
          detail::kCommTimeoutHint, cause));
    }
    throw PeerError(fmt::format(
        "rank {}: {} on gloo group '{}' failed: {}; {} [gloo: {}]", rank(), ctx.description,
        group_name_,
        peer >= 0 ? fmt::format("the link to rank {} broke", peer) : "a peer's link broke", peers,
        cause));
  }

  std::shared_ptr<Store> store_;
  std::string group_name_;
  std::string host_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  std::unique_ptr<detail::ProgressBoard> board_;
};

}  // namespace

std::shared_ptr<Communicator> make_gloo_communicator(const BackendOptions& options,
                                                     const std::string& interface_host) {
  return std::make_shared<GlooCommunicator>(options, interface_host);
}

}  // namespace tandem
