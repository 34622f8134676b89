#include "comm/shm/shm_collectives.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "comm/shm/reduce_kernels.h"
#include "tandem/core/check.h"

// Note [Chunk protocol]
// Every collective moves its data through per-rank buffers in the segment, one
// chunk at a time. Chunks are numbered across operations (g = 0, 1, 2, ...;
// every rank derives the same count per operation from the sizes, so the
// numbers agree), and chunk g uses buffer g % buffers of each rank. Each rank
// owns three counters that it raises to g + 1 in order, with release stores:
//   copied  - its input of chunk g is in its buffer;
//   reduced - it has reduced (and published) its own slice of chunk g;
//   done    - it has finished reading other ranks' buffers for chunk g.
// A rank writes chunk g into its buffer only after every rank's done reached
// g - buffers + 1 (the chunk that used the buffer before is fully read), and
// reads a peer's buffer only after that peer's copied / reduced reached g + 1
// (acquire loads). Counters only grow, so no flag is ever reset and a late
// reader can never mistake an old chunk for a new one. A rank raises all three
// counters for every chunk even when a stage has nothing to do for it.
//
// Large all_reduce (two-shot): chunk g holds slice s = the next `chunk`
// elements of shard_range s; rank r copies its slices s != r in, reduces slice
// r over all ranks (its own input read in place) into its tensor and its
// buffer, and then copies every peer's reduced slice out. Each rank thus moves
// about 3x the data once, and the reduction work is split n ways. The stages
// run as a software pipeline (copy chunk t in, reduce chunk t-1, copy chunk
// t-2 out), so a rank rarely waits: with 4 buffers, 2 chunks are in flight.
// Rotating through 4 buffers also matters on its own: writing lines that a
// peer core read a moment ago is several times slower than writing lines it
// read a few chunks ago (and see Note [Streaming stores]).
// Small all_reduce (one-shot): every rank copies its whole chunk in and reduces
// all buffers itself, saving one round of flags, which is what costs at small
// sizes. Every rank reduces in rank order, so all get bitwise equal results.

// Note [Streaming stores]
// Every line a rank writes into its own buffers was read by a peer core a few
// chunks before, so a plain store first has to take the line back from that
// core's cache. Whether that is cheap depends on where the two cores sit, and
// under a hypervisor that changes from run to run: on a 2-vCPU VM (AMD EPYC)
// a cache line round trip between the ranks took ~110 ns in most launches
// and 1-2 us in about one in three, and the latter is not a short episode:
// it lasted whole launches, whatever the ranks were pinned to inside the VM.
// There, plain stores made a 64 MiB all_reduce ~6x slower (about 47 ms
// instead of 8 ms; copying in and reducing took 5-10x longer, waits did not
// change), while streaming (non-temporal) stores, which write whole lines to
// memory without fetching them, kept it at ~7.5 ms. When the cores share a
// cache, though, streaming stores cost ~50% more (12 ms: the peer then reads
// the chunk from memory, not from the shared cache). Neither choice wins in
// both cases, so the ranks probe which case they are in: choose_stores()
// passes a token on a line of its own around the ranks 9 times, keeps the
// quickest trip, and from then on writes own buffers with streaming stores
// (operations >= 256 KiB only) if a hop took over 100 ns. The probe runs in
// the first such operation and again after 64 operations or 64 MiB, counted
// the same on every rank, so that all ranks probe together; it waits like
// any other stage, so a dead or absent peer is reported, not waited for.
// Measured on that VM (2 ranks, float32 all_reduce, busbw vs OpenMPI's
// MPI_Allreduce in the same launch): a round trip of the token took 80-150 ns
// in fast launches and 280-460 ns in slow ones (quickest of 8; a single trip
// is often slower, as the 1-2 us above). Before the
// probe, slow launches reached 1.3-1.4 GB/s at 256 KiB-64 MiB (0.3-0.8x MPI);
// with it 5.4-13 GB/s (2.5-6.5x), while fast launches kept 10-18 GB/s at
// 256 KiB-4 MiB (1.6-2.8x) and rose from ~7.5 to ~9.5 GB/s at 64 MiB (no
// trial chunks). Timing the stores themselves instead (trying the other kind
// now and then) cost too much below 16 MiB: trial chunks and wrong picks took
// 1-4 MiB from ~15 to 9.5-13 GB/s in fast launches. It is kept for more ranks
// than cores only (Stores::kMeasured), where the probe would time the
// scheduler. Only the store kind differs, never what is written or when it
// is published, so ranks that choose differently still agree on every result.

namespace tandem::comm::detail {
namespace {

// Operations below this size always use plain stores: one-shot all_reduce
// and the like, where a round of flags, not the stores, is what costs.
constexpr size_t kStreamingOpBytes = size_t{256} << 10;
// The probe times this many trips of the token around the ranks and keeps
// the quickest, so that one trip slowed by an interrupt does not count.
constexpr uint64_t kProbeRounds = 8;
// A line's trip from one rank to the next counts as slow above this: the
// quickest took 40-75 ns when the cores shared a cache, 140-230 ns when not.
constexpr std::chrono::nanoseconds kSlowHop{100};
// Probe again after this many operations, or this many bytes, since the
// last probe, whichever comes first: a probe costs ~1 us (fast links) to
// ~20 us (slow), against 20 us to 10 ms for an operation.
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

// All_reduce of at most kOneShotBytes / size bytes goes one-shot. One-shot
// reads (size - 1) x the data from other cores where two-shot reads about 1x,
// but saves a round of flags; on 2 ranks it wins up to ~128 KiB.
constexpr size_t kOneShotBytes = size_t{256} << 10;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Three-stage software pipeline: stage 0 of chunk t, stage 1 of chunk t - 1,
// stage 2 of chunk t - 2. Needs at least 3 buffers (see Note [Chunk protocol]).
template <typename S0, typename S1, typename S2>
void run_pipeline(int64_t chunks, S0&& s0, S1&& s1, S2&& s2) {
  for (int64_t t = 0; t < chunks + 2; ++t) {
    if (t < chunks) s0(t);
    if (t >= 1 && t <= chunks) s1(t - 1);
    if (t >= 2) s2(t - 2);
  }
}

// Two stages, one chunk apart.
template <typename S0, typename S1>
void run_pipeline(int64_t chunks, S0&& s0, S1&& s1) {
  for (int64_t t = 0; t < chunks + 1; ++t) {
    if (t < chunks) s0(t);
    if (t >= 1) s1(t - 1);
  }
}

}  // namespace

// How an operation over shards cuts into chunks: chunk t of shard s is its
// elements [t * chunk, (t + 1) * chunk).
struct ShmCollectives::Plan {
  size_t elem_bytes = 0;
  std::vector<ShardRange> shards;
  int64_t chunk = 1;
  int64_t chunks = 0;

  Plan(int64_t numel, int size, size_t es, size_t chunk_bytes) : elem_bytes(es) {
    for (int s = 0; s < size; ++s) shards.push_back(shard_range(numel, size, s));
    chunk = std::max<int64_t>(1, static_cast<int64_t>(chunk_bytes / es));
    chunks = ceil_div(shards[0].numel, chunk);  // shard 0 is the longest
  }
  int64_t count(int s, int64_t t) const {
    return std::clamp<int64_t>(shards[s].numel - t * chunk, 0, chunk);
  }
  size_t bytes(int s, int64_t t) const { return static_cast<size_t>(count(s, t)) * elem_bytes; }
  size_t total_bytes() const {
    return static_cast<size_t>(shards.back().offset + shards.back().numel) * elem_bytes;
  }
  // Byte offset of chunk t of shard s in the full vector.
  size_t offset(int s, int64_t t) const {
    return static_cast<size_t>(shards[s].offset + t * chunk) * elem_bytes;
  }
};

ShmCollectives::ShmCollectives(const ShmSegment& segment, WaitPolicy policy)
    : segment_(segment),
      policy_(policy),
      rank_(segment.rank()),
      size_(segment.size()),
      slice_stride_(segment.layout().slot_bytes / segment.size() / 64 * 64),
      probe_links_(static_cast<unsigned>(size_) <=
                   std::max(1u, std::thread::hardware_concurrency())) {}

void ShmCollectives::enter(const OpContext& ctx) {
  segment_.control(rank_).seq.store(ctx.seq, std::memory_order_release);
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
  const uint64_t buffers = static_cast<uint64_t>(segment_.layout().buffers);
  if (g < buffers) return;
  wait_ranks(waiter, &RankControl::done, g - buffers + 1, -1, stage);
}

void ShmCollectives::all_reduce(std::byte* data, int64_t numel, at::ScalarType dtype, ReduceOp op,
                                const OpContext& ctx) {
  enter(ctx);
  if (numel == 0 || size_ == 1) return;  // a sum, min, ... or average of one is itself
  const size_t es = c10::elementSize(dtype);
  if (static_cast<size_t>(numel) * es <= kOneShotBytes / static_cast<size_t>(size_)) {
    one_shot(data, numel, dtype, op, ctx);
    return;
  }
  // Slices as long as the buffers allow: every chunk costs a round of flags,
  // and on two cores there is no idle time for smaller chunks to fill.
  Plan plan(numel, size_, es, slice_stride_);
  two_shot(data, data, plan, dtype, op, /*gather=*/true, ctx);
}

void ShmCollectives::reduce_scatter(std::byte* out, const std::byte* in, int64_t numel,
                                    at::ScalarType dtype, ReduceOp op, const OpContext& ctx) {
  enter(ctx);
  if (numel == 0) return;
  const size_t es = c10::elementSize(dtype);
  if (size_ == 1) {
    const void* src = in;
    detail::reduce_arrays(dtype, op, &src, 1, numel, out, nullptr);  // kAvg: x / 1
    return;
  }
  Plan plan(numel, size_, es, slice_stride_);
  two_shot(out, in, plan, dtype, op, /*gather=*/false, ctx);
}

// gather: all_reduce (out == in, every rank ends with every slice); else
// reduce_scatter (out is this rank's shard only).
void ShmCollectives::two_shot(std::byte* out, const std::byte* in, const Plan& plan,
                              at::ScalarType dtype, ReduceOp op, bool gather,
                              const OpContext& ctx) {
  ShmWaiter waiter(segment_, ctx, policy_);
  const uint64_t base = next_chunk_;
  next_chunk_ += static_cast<uint64_t>(plan.chunks);
  choose_stores(waiter, plan.total_bytes());
  std::vector<const void*> srcs(static_cast<size_t>(size_));
  auto copy_in = [&](int64_t t) {
    const uint64_t g = base + t;
    const int b = buffer_of(g);
    wait_buffer_free(waiter, g, {"an earlier chunk not read yet", t, plan.chunks});
    for (int s = 0; s < size_; ++s) {
      if (s != rank_ && plan.count(s, t) > 0) {
        write_own(slice(rank_, b, s), in + plan.offset(s, t), plan.bytes(s, t));
      }
    }
    publish(&RankControl::copied, g);
  };
  auto reduce = [&](int64_t t) {
    const uint64_t g = base + t;
    const int b = buffer_of(g);
    wait_ranks(waiter, &RankControl::copied, g + 1, -1,
               {"input not copied in yet", t, plan.chunks});
    for (int j = 0; j < size_; ++j) {
      srcs[j] =
          j == rank_ ? static_cast<const void*>(in + plan.offset(rank_, t)) : slice(j, b, rank_);
    }
    std::byte* dst = gather ? out + plan.offset(rank_, t)
                            : out + static_cast<size_t>(t * plan.chunk) * plan.elem_bytes;
    if (gather && stores_ != Stores::kPlain) {
      // Reduce, then publish the slice from dst (still in this core's cache).
      reduce_arrays(dtype, op, srcs.data(), size_, plan.count(rank_, t), dst, nullptr);
      write_own(slice(rank_, b, rank_), dst, plan.bytes(rank_, t));
    } else {
      reduce_arrays(dtype, op, srcs.data(), size_, plan.count(rank_, t), dst,
                    gather ? slice(rank_, b, rank_) : nullptr);
    }
    publish(&RankControl::reduced, g);
    if (!gather) publish(&RankControl::done, g);
  };
  auto copy_out = [&](int64_t t) {
    if (!gather) return;
    const uint64_t g = base + t;
    const int b = buffer_of(g);
    wait_ranks(waiter, &RankControl::reduced, g + 1, -1, {"slice not reduced yet", t, plan.chunks});
    for (int j = 0; j < size_; ++j) {
      if (j != rank_ && plan.count(j, t) > 0) {
        std::memcpy(out + plan.offset(j, t), slice(j, b, j), plan.bytes(j, t));
      }
    }
    publish(&RankControl::done, g);
  };
  run_pipeline(plan.chunks, copy_in, reduce, copy_out);
}

void ShmCollectives::one_shot(std::byte* data, int64_t numel, at::ScalarType dtype, ReduceOp op,
                              const OpContext& ctx) {
  ShmWaiter waiter(segment_, ctx, policy_);
  const size_t es = c10::elementSize(dtype);
  const int64_t chunk = static_cast<int64_t>(segment_.layout().slot_bytes / es);
  const int64_t chunks = ceil_div(numel, chunk);
  const uint64_t base = next_chunk_;
  next_chunk_ += static_cast<uint64_t>(chunks);
  std::vector<const void*> srcs(static_cast<size_t>(size_));
  auto count = [&](int64_t t) { return std::min(chunk, numel - t * chunk); };
  auto copy_in = [&](int64_t t) {
    const uint64_t g = base + t;
    wait_buffer_free(waiter, g, {"an earlier chunk not read yet", t, chunks});
    std::memcpy(segment_.slot(rank_, buffer_of(g)), data + t * chunk * es, count(t) * es);
    publish(&RankControl::copied, g);
  };
  auto reduce = [&](int64_t t) {
    const uint64_t g = base + t;
    wait_ranks(waiter, &RankControl::copied, g + 1, -1, {"input not copied in yet", t, chunks});
    std::byte* mine = data + t * chunk * es;
    for (int j = 0; j < size_; ++j) {
      srcs[j] = j == rank_ ? static_cast<const void*>(mine) : segment_.slot(j, buffer_of(g));
    }
    reduce_arrays(dtype, op, srcs.data(), size_, count(t), mine, nullptr);
    publish(&RankControl::reduced, g);
    publish(&RankControl::done, g);
  };
  run_pipeline(chunks, copy_in, reduce);
}

void ShmCollectives::all_gather(std::byte* out, const std::byte* in, int64_t numel,
                                size_t elem_bytes, const OpContext& ctx) {
  enter(ctx);
  Plan plan(numel, size_, elem_bytes, segment_.layout().slot_bytes);
  std::byte* own = out + plan.offset(rank_, 0);
  if (own != in) std::memmove(own, in, static_cast<size_t>(plan.shards[rank_].numel) * elem_bytes);
  if (size_ == 1 || numel == 0) return;
  ShmWaiter waiter(segment_, ctx, policy_);
  choose_stores(waiter, plan.total_bytes());
  const uint64_t base = next_chunk_;
  next_chunk_ += static_cast<uint64_t>(plan.chunks);
  auto copy_in = [&](int64_t t) {
    const uint64_t g = base + t;
    wait_buffer_free(waiter, g, {"an earlier chunk not read yet", t, plan.chunks});
    write_own(segment_.slot(rank_, buffer_of(g)),
              in + (plan.offset(rank_, t) - plan.offset(rank_, 0)), plan.bytes(rank_, t));
    publish(&RankControl::copied, g);
    publish(&RankControl::reduced, g);
  };
  auto copy_out = [&](int64_t t) {
    const uint64_t g = base + t;
    wait_ranks(waiter, &RankControl::copied, g + 1, -1,
               {"shard not copied in yet", t, plan.chunks});
    for (int j = 0; j < size_; ++j) {
      if (j != rank_ && plan.count(j, t) > 0) {
        std::memcpy(out + plan.offset(j, t), segment_.slot(j, buffer_of(g)), plan.bytes(j, t));
      }
    }
    publish(&RankControl::done, g);
  };
  run_pipeline(plan.chunks, copy_in, copy_out);
}

void ShmCollectives::broadcast(std::byte* data, int64_t numel, size_t elem_bytes, int root,
                               const OpContext& ctx) {
  enter(ctx);
  if (size_ == 1 || numel == 0) return;
  ShmWaiter waiter(segment_, ctx, policy_);
  choose_stores(waiter, static_cast<size_t>(numel) * elem_bytes);
  const int64_t chunk = static_cast<int64_t>(segment_.layout().slot_bytes / elem_bytes);
  const int64_t chunks = ceil_div(numel, chunk);
  const uint64_t base = next_chunk_;
  next_chunk_ += static_cast<uint64_t>(chunks);
  auto bytes = [&](int64_t t) {
    return static_cast<size_t>(std::min(chunk, numel - t * chunk)) * elem_bytes;
  };
  auto copy_in = [&](int64_t t) {
    const uint64_t g = base + t;
    if (rank_ == root) {
      wait_buffer_free(waiter, g, {"an earlier chunk not read yet", t, chunks});
      write_own(segment_.slot(rank_, buffer_of(g)), data + t * chunk * elem_bytes, bytes(t));
    }
    publish(&RankControl::copied, g);
    publish(&RankControl::reduced, g);
  };
  auto copy_out = [&](int64_t t) {
    const uint64_t g = base + t;
    if (rank_ != root) {
      wait_ranks(waiter, &RankControl::copied, g + 1, root,
                 {"root's data not copied in yet", t, chunks});
      std::memcpy(data + t * chunk * elem_bytes, segment_.slot(root, buffer_of(g)), bytes(t));
    }
    publish(&RankControl::done, g);
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
  ShmWaiter waiter(segment_, ctx, policy_);
  choose_stores(waiter, static_cast<size_t>(numel) * elem_bytes);
  const int64_t chunk = static_cast<int64_t>(slice_stride_ / elem_bytes);
  const int64_t chunks = ceil_div(m, chunk);
  const uint64_t base = next_chunk_;
  next_chunk_ += static_cast<uint64_t>(chunks);
  auto bytes = [&](int64_t t) {
    return static_cast<size_t>(std::min(chunk, m - t * chunk)) * elem_bytes;
  };
  auto at = [&](int block, int64_t t) { return block * block_bytes + t * chunk * elem_bytes; };
  auto copy_in = [&](int64_t t) {
    const uint64_t g = base + t;
    wait_buffer_free(waiter, g, {"an earlier chunk not read yet", t, chunks});
    for (int s = 0; s < size_; ++s) {
      if (s != rank_) {
        write_own(slice(rank_, buffer_of(g), s), in + at(s, t), bytes(t));
      }
    }
    publish(&RankControl::copied, g);
    publish(&RankControl::reduced, g);
  };
  auto copy_out = [&](int64_t t) {
    const uint64_t g = base + t;
    wait_ranks(waiter, &RankControl::copied, g + 1, -1, {"blocks not copied in yet", t, chunks});
    for (int j = 0; j < size_; ++j) {
      if (j != rank_) std::memcpy(out + at(j, t), slice(j, buffer_of(g), rank_), bytes(t));
    }
    publish(&RankControl::done, g);
  };
  run_pipeline(chunks, copy_in, copy_out);
}

void ShmCollectives::barrier(const OpContext& ctx) {
  enter(ctx);
  if (size_ == 1) return;
  ShmWaiter waiter(segment_, ctx, policy_);
  const uint64_t g = next_chunk_++;
  publish(&RankControl::copied, g);
  publish(&RankControl::reduced, g);
  wait_ranks(waiter, &RankControl::copied, g + 1, -1, {"not at the barrier yet"});
  publish(&RankControl::done, g);
}

}  // namespace tandem::comm::detail
