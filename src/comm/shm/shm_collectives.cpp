#include "comm/shm/shm_collectives.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "comm/algorithms/one_shot.h"
#include "comm/algorithms/two_shot.h"
#include "comm/shm/reduce_kernels.h"
#include "tandem/core/check.h"

// Note [Streaming stores]
// Every line a rank writes into its own buffers was read by a peer core a few
// chunks before, so a plain store first has to take the line back from that
// core's cache. Whether that is cheap depends on where the two cores sit, and
// under a hypervisor that changes from launch to launch and lasts whole
// launches, whatever the ranks are pinned to inside the VM. When the cores
// sit far apart, plain stores make large operations several times slower
// (copying in and reducing slow down; the waits do not), while streaming
// (non-temporal) stores, which write whole lines to memory without fetching
// them, avoid that cost. When the cores share a cache, though, streaming
// stores cost more (the peer then reads the chunk from memory, not from the
// shared cache). Neither choice wins in both cases, so the ranks probe which
// case they are in: choose_stores() passes a token on a line of its own
// around the ranks kProbeRounds + 1 times, keeps the quickest trip, and from
// then on writes own buffers with streaming stores (operations of
// kStreamingOpBytes or more only) if a hop took over kSlowHop. The probe runs
// in the first such operation and again after kProbeEveryOps operations or
// kProbeEveryBytes, counted the same on every rank, so that all ranks probe
// together; it waits like any other stage, so a dead or absent peer is
// reported, not waited for. Timing the stores themselves instead (trying the
// other kind now and then) costs too much in trial chunks and wrong picks
// below kMeasuredOpBytes; it is kept for more ranks than cores only
// (Stores::kMeasured), where the probe would time the scheduler. Only the
// store kind differs, never what is written or when it is published, so
// ranks that choose differently still agree on every result. The
// measurements behind these choices, and the command that repeats them, are
// in docs/comm.md (Streaming stores).

namespace tandem::comm::detail {
namespace {

using ::tandem::detail::ChunkPlan;
using ::tandem::detail::kWaitBufferFree;
using ::tandem::detail::run_pipeline;

// Operations below this size always use plain stores: one-shot all_reduce
// and the like, where a round of flags, not the stores, is what costs.
constexpr size_t kStreamingOpBytes = size_t{256} << 10;
// The probe times this many trips of the token around the ranks and keeps
// the quickest, so that one trip slowed by an interrupt does not count.
constexpr uint64_t kProbeRounds = 8;
// A line's trip from one rank to the next counts as slow above this, which
// lies between the quickest trips seen when the cores share a cache and
// when they do not (docs/comm.md).
constexpr std::chrono::nanoseconds kSlowHop{100};
// Probe again after this many operations, or this many bytes, since the
// last probe, whichever comes first: often enough to follow a change of
// placement, rarely enough that the probe costs a small fraction of the
// operations it decides for.
constexpr uint64_t kProbeEveryOps = 64;
constexpr size_t kProbeEveryBytes = size_t{64} << 20;
// With more ranks than cores the probe would time the scheduler, not the
// links; then operations from kMeasuredOpBytes on measure what each kind of
// store costs instead (below that, trial writes cost more than they save,
// and writes below kTimedWriteBytes are too short to time usefully). One
// timed write in kExplorePeriod tries the kind not in use; streaming stores
// must be kStreamingMargin times faster to be chosen, as a streamed chunk
// also costs the reader more, which the writer's timing does not see.
constexpr size_t kMeasuredOpBytes = size_t{16} << 20;
constexpr size_t kTimedWriteBytes = size_t{64} << 10;
constexpr uint64_t kExplorePeriod = 32;
constexpr double kStreamingMargin = 1.5;

}  // namespace

// The ChunkTransport (comm/algorithms/chunk_plan.h) of one operation: the
// segment's buffers and counters, waited on with this operation's deadline.
class ShmCollectives::Transport {
 public:
  Transport(ShmCollectives& c, const OpContext& ctx) : c_(c), waiter_(c.segment_, ctx, c.policy_) {}

  int rank() const { return c_.rank_; }
  int size() const { return c_.size_; }
  std::byte* buffer(int r, uint64_t g) const { return c_.segment_.slot(r, c_.buffer_of(g)); }
  std::byte* slice(int r, uint64_t g, int s) const { return c_.slice(r, c_.buffer_of(g), s); }
  size_t buffer_bytes() const { return c_.segment_.layout().slot_bytes; }
  size_t slice_bytes() const { return c_.slice_stride_; }
  void wait_free(uint64_t g, const WaitStage& why) { c_.wait_buffer_free(waiter_, g, why); }
  void publish(ChunkStage stage, uint64_t g) { c_.publish(counter_of(stage), g); }
  void wait_stage(ChunkStage stage, uint64_t g, int only, const WaitStage& why) {
    c_.wait_ranks(waiter_, counter_of(stage), g + 1, only, why);
  }
  void write_own(std::byte* dst, const std::byte* src, size_t bytes) {
    c_.write_own(dst, src, bytes);
  }
  bool plain_stores() const { return c_.stores_ == Stores::kPlain; }
  void reduce(at::ScalarType dtype, ReduceOp op, const void* const* srcs, int n, int64_t count,
              void* dst, void* dst2) {
    reduce_arrays(dtype, op, srcs, n, count, dst, dst2);
  }
  // See ShmCollectives::choose_stores.
  void choose_stores(size_t op_bytes) { c_.choose_stores(waiter_, op_bytes); }
  ShmWaiter& waiter() { return waiter_; }

 private:
  ShmCollectives& c_;
  ShmWaiter waiter_;
};
ShmCollectives::ShmCollectives(const ShmSegment& segment, WaitPolicy policy)
    : segment_(segment),
      policy_(policy),
      rank_(segment.rank()),
      size_(segment.size()),
      slice_stride_(segment.layout().slot_bytes / segment.size() / 64 * 64),
      probe_links_(static_cast<unsigned>(size_) <=
                   std::max(1u, std::thread::hardware_concurrency())) {
  static_assert(::tandem::detail::ChunkTransport<Transport>);
}

void ShmCollectives::enter(const OpContext& ctx) {
  segment_.control(rank_).seq.store(ctx.seq, std::memory_order_release);
}

ShmCollectives::Counter ShmCollectives::counter_of(ChunkStage stage) {
  switch (stage) {
    case ChunkStage::kCopied:
      return &RankControl::copied;
    case ChunkStage::kReduced:
      return &RankControl::reduced;
    case ChunkStage::kDone:
      return &RankControl::done;
  }
  return &RankControl::done;
}

void ShmCollectives::publish(Counter counter, uint64_t g) const {
  (segment_.control(rank_).*counter).store(g + 1, std::memory_order_release);
}

void ShmCollectives::choose_stores(ShmWaiter& waiter, size_t op_bytes) {
  stores_ = Stores::kPlain;
  if (!probe_links_) {
    if (op_bytes >= kMeasuredOpBytes) stores_ = Stores::kMeasured;
    return;
  }
  if (op_bytes < kStreamingOpBytes) return;
  if (probes_ == 0 || ops_since_probe_ >= kProbeEveryOps ||
      bytes_since_probe_ >= kProbeEveryBytes) {
    slow_links_ = links_are_slow(waiter);
    ops_since_probe_ = 0;
    bytes_since_probe_ = 0;
  }
  ++ops_since_probe_;
  bytes_since_probe_ += op_bytes;
  stores_ = slow_links_ ? Stores::kStreaming : Stores::kPlain;
}

bool ShmCollectives::links_are_slow(ShmWaiter& waiter) {
  // Rank 0 sends round k by raising its probe counter to k; every other rank
  // passes it on once its predecessor has. Each rank times the rounds
  // between its own turns, from the second on (the first also waits for the
  // ranks to arrive).
  const int prev = (rank_ + size_ - 1) % size_;
  std::atomic<uint64_t>& mine = segment_.control(rank_).probe;
  const uint64_t base = probes_++ * (kProbeRounds + 1);
  Clock::duration best = Clock::duration::max();
  Clock::time_point last;
  for (uint64_t k = base + 1; k <= base + kProbeRounds + 1; ++k) {
    if (rank_ == 0) mine.store(k, std::memory_order_release);
    wait_ranks(waiter, &RankControl::probe, k, prev, {"link probe not passed on yet"});
    if (rank_ != 0) mine.store(k, std::memory_order_release);
    const Clock::time_point now = Clock::now();
    if (k > base + 1) best = std::min(best, now - last);
    last = now;
  }
  return best > kSlowHop * size_;
}

void ShmCollectives::write_own(std::byte* dst, const std::byte* src, size_t bytes) {
  if (stores_ == Stores::kMeasured && bytes >= kTimedWriteBytes) {
    write_own_measured(dst, src, bytes);
  } else if (stores_ == Stores::kStreaming) {
    copy_streaming(dst, src, bytes);
  } else {
    std::memcpy(dst, src, bytes);
  }
}

void ShmCollectives::write_own_measured(std::byte* dst, const std::byte* src, size_t bytes) {
  const double plain = write_ns_per_byte_[0];
  const double streaming = write_ns_per_byte_[1];
  const uint64_t n = timed_writes_++;
  int kind = streaming * kStreamingMargin < plain ? 1 : 0;
  if (plain == 0 || streaming == 0) {
    kind = static_cast<int>(n % 2);  // measure both kinds first
  } else if (n % kExplorePeriod == 0) {
    kind = 1 - kind;
  }
  const Clock::time_point start = Clock::now();
  if (kind == 1) {
    copy_streaming(dst, src, bytes);
  } else {
    std::memcpy(dst, src, bytes);
  }
  const double ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  // A running mean over about the last 4 writes of each kind: quick to follow
  // a change, while one write slowed by preemption is soon forgotten.
  double& cost = write_ns_per_byte_[kind];
  const double sample = ns / static_cast<double>(bytes);
  cost = cost == 0 ? sample : cost + (sample - cost) / 4;
}

void ShmCollectives::wait_ranks(ShmWaiter& waiter, Counter counter, uint64_t target, int only,
                                const WaitStage& stage) const {
  auto ok = [&](int j) {
    return j == rank_ || (only >= 0 && j != only) ||
           (segment_.control(j).*counter).load(std::memory_order_acquire) >= target;
  };
  int next = 0;  // ranks below `next` are known to be there
  waiter.wait(
      [&] {
        while (next < size_ && ok(next)) ++next;
        return next == size_;
      },
      [&] {
        std::vector<int> pending;
        for (int j = next; j < size_; ++j) {
          if (!ok(j)) pending.push_back(j);
        }
        return pending;
      },
      stage);
}

void ShmCollectives::wait_buffer_free(ShmWaiter& waiter, uint64_t g, const WaitStage& stage) const {
  const uint64_t target = ::tandem::detail::chunk_buffer_free_after(g, segment_.layout().buffers);
  if (target == 0) return;
  wait_ranks(waiter, &RankControl::done, target, -1, stage);
}

void ShmCollectives::all_reduce(std::byte* data, int64_t numel, at::ScalarType dtype, ReduceOp op,
                                const OpContext& ctx) {
  enter(ctx);
  if (numel == 0 || size_ == 1) return;  // a sum, min, ... or average of one is itself
  const size_t es = c10::elementSize(dtype);
  Transport tr(*this, ctx);
  if (::tandem::detail::prefer_one_shot(static_cast<size_t>(numel) * es, size_)) {
    const uint64_t first =
        take_chunks(::tandem::detail::one_shot_chunks(numel, tr.buffer_bytes(), es));
    ::tandem::detail::one_shot(tr, first, data, numel, dtype, op);
    return;
  }
  // Slices as long as the buffers allow: every chunk costs a round of flags,
  // and on two cores there is no idle time for smaller chunks to fill.
  ChunkPlan plan(numel, size_, es, slice_stride_);
  const uint64_t first = take_chunks(plan.chunks);
  tr.choose_stores(plan.total_bytes());
  ::tandem::detail::two_shot(tr, plan, first, data, data, dtype, op, /*gather=*/true);
}

void ShmCollectives::reduce_scatter(std::byte* out, const std::byte* in, int64_t numel,
                                    at::ScalarType dtype, ReduceOp op, const OpContext& ctx) {
  enter(ctx);
  if (numel == 0) return;
  const size_t es = c10::elementSize(dtype);
  if (size_ == 1) {
    const void* src = in;
    reduce_arrays(dtype, op, &src, 1, numel, out, nullptr);  // kAvg: x / 1
    return;
  }
  Transport tr(*this, ctx);
  ChunkPlan plan(numel, size_, es, slice_stride_);
  const uint64_t first = take_chunks(plan.chunks);
  tr.choose_stores(plan.total_bytes());
  ::tandem::detail::two_shot(tr, plan, first, out, in, dtype, op, /*gather=*/false);
}

void ShmCollectives::all_gather(std::byte* out, const std::byte* in, int64_t numel,
                                size_t elem_bytes, const OpContext& ctx) {
  enter(ctx);
  ChunkPlan plan(numel, size_, elem_bytes, segment_.layout().slot_bytes);
  std::byte* own = out + plan.offset(rank_, 0);
  if (own != in) std::memmove(own, in, static_cast<size_t>(plan.shards[rank_].numel) * elem_bytes);
  if (size_ == 1 || numel == 0) return;
  Transport tr(*this, ctx);
  tr.choose_stores(plan.total_bytes());
  const uint64_t first = take_chunks(plan.chunks);
  auto copy_in = [&](int64_t t) {
    const uint64_t g = first + t;
    tr.wait_free(g, {kWaitBufferFree, t, plan.chunks});
    tr.write_own(tr.buffer(rank_, g), in + (plan.offset(rank_, t) - plan.offset(rank_, 0)),
                 plan.bytes(rank_, t));
    tr.publish(ChunkStage::kCopied, g);
    tr.publish(ChunkStage::kReduced, g);
  };
  auto copy_out = [&](int64_t t) {
    const uint64_t g = first + t;
    tr.wait_stage(ChunkStage::kCopied, g, -1, {"shard not copied in yet", t, plan.chunks});
    for (int j = 0; j < size_; ++j) {
      if (j != rank_ && plan.count(j, t) > 0) {
        std::memcpy(out + plan.offset(j, t), tr.buffer(j, g), plan.bytes(j, t));
      }
    }
    tr.publish(ChunkStage::kDone, g);
  };
  run_pipeline(plan.chunks, copy_in, copy_out);
}

void ShmCollectives::broadcast(std::byte* data, int64_t numel, size_t elem_bytes, int root,
                               const OpContext& ctx) {
  enter(ctx);
  if (size_ == 1 || numel == 0) return;
  Transport tr(*this, ctx);
  tr.choose_stores(static_cast<size_t>(numel) * elem_bytes);
  const int64_t chunk = static_cast<int64_t>(tr.buffer_bytes() / elem_bytes);
  const int64_t chunks = ::tandem::detail::ceil_div(numel, chunk);
  const uint64_t first = take_chunks(chunks);
  auto bytes = [&](int64_t t) {
    return static_cast<size_t>(std::min(chunk, numel - t * chunk)) * elem_bytes;
  };
  auto copy_in = [&](int64_t t) {
    const uint64_t g = first + t;
    if (rank_ == root) {
      tr.wait_free(g, {kWaitBufferFree, t, chunks});
      tr.write_own(tr.buffer(rank_, g), data + t * chunk * elem_bytes, bytes(t));
    }
    tr.publish(ChunkStage::kCopied, g);
    tr.publish(ChunkStage::kReduced, g);
  };
  auto copy_out = [&](int64_t t) {
    const uint64_t g = first + t;
    if (rank_ != root) {
      tr.wait_stage(ChunkStage::kCopied, g, root, {"root's data not copied in yet", t, chunks});
      std::memcpy(data + t * chunk * elem_bytes, tr.buffer(root, g), bytes(t));
    }
    tr.publish(ChunkStage::kDone, g);
  };
  run_pipeline(chunks, copy_in, copy_out);
}

void ShmCollectives::all_to_all(std::byte* out, const std::byte* in, int64_t numel,
                                size_t elem_bytes, const OpContext& ctx) {
  enter(ctx);
  const int64_t m = numel / size_;  // elements per block
  const size_t block_bytes = static_cast<size_t>(m) * elem_bytes;
  if (out != in) std::memmove(out + rank_ * block_bytes, in + rank_ * block_bytes, block_bytes);
  if (size_ == 1 || m == 0) return;
  Transport tr(*this, ctx);
  tr.choose_stores(static_cast<size_t>(numel) * elem_bytes);
  const int64_t chunk = static_cast<int64_t>(slice_stride_ / elem_bytes);
  const int64_t chunks = ::tandem::detail::ceil_div(m, chunk);
  const uint64_t first = take_chunks(chunks);
  auto bytes = [&](int64_t t) {
    return static_cast<size_t>(std::min(chunk, m - t * chunk)) * elem_bytes;
  };
  auto at = [&](int block, int64_t t) { return block * block_bytes + t * chunk * elem_bytes; };
  auto copy_in = [&](int64_t t) {
    const uint64_t g = first + t;
    tr.wait_free(g, {kWaitBufferFree, t, chunks});
    for (int s = 0; s < size_; ++s) {
      if (s != rank_) tr.write_own(tr.slice(rank_, g, s), in + at(s, t), bytes(t));
    }
    tr.publish(ChunkStage::kCopied, g);
    tr.publish(ChunkStage::kReduced, g);
  };
  auto copy_out = [&](int64_t t) {
    const uint64_t g = first + t;
    tr.wait_stage(ChunkStage::kCopied, g, -1, {"blocks not copied in yet", t, chunks});
    for (int j = 0; j < size_; ++j) {
      if (j != rank_) std::memcpy(out + at(j, t), tr.slice(j, g, rank_), bytes(t));
    }
    tr.publish(ChunkStage::kDone, g);
  };
  run_pipeline(chunks, copy_in, copy_out);
}

void ShmCollectives::barrier(const OpContext& ctx) {
  enter(ctx);
  if (size_ == 1) return;
  Transport tr(*this, ctx);
  const uint64_t g = take_chunks(1);
  tr.publish(ChunkStage::kCopied, g);
  tr.publish(ChunkStage::kReduced, g);
  tr.wait_stage(ChunkStage::kCopied, g, -1, {"not at the barrier yet"});
  tr.publish(ChunkStage::kDone, g);
}

}  // namespace tandem::comm::detail
