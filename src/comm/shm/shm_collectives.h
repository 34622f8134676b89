// The collectives of the shm backend over raw buffers: the chunked
// algorithms of comm/algorithms/ (two_shot.h for large all_reduce and
// reduce_scatter, one_shot.h for small all_reduce) over the segment's
// buffers and counters, and the gather/scatter family over the same chunk
// protocol (see Note [Chunk protocol] in comm/algorithms/chunk_plan.cpp).
// This class is their transport: it owns the chunk numbering, the waits and
// the choice of store kind (see Note [Streaming stores] in
// shm_collectives.cpp).
//
// Collective: every rank of the segment calls the same operations in the
// same order with matching sizes. Not thread-safe: one operation at a time
// (the Communicator's collective lane). Each returns or throws by
// ctx.deadline (TimeoutError naming the missing ranks, PeerError naming a
// dead one).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>

#include "comm/algorithms/chunk_plan.h"
#include "comm/shm/shm_segment.h"
#include "comm/shm/shm_waiter.h"
#include "tandem/comm/communicator.h"

namespace tandem::comm::detail {

class ShmCollectives {
 public:
  ShmCollectives(const ShmSegment& segment, WaitPolicy policy);

  // Records that this rank entered collective ctx.seq (for other ranks'
  // messages). Every operation calls it first.
  void enter(const OpContext& ctx);

  void all_reduce(std::byte* data, int64_t numel, at::ScalarType dtype, ReduceOp op,
                  const OpContext& ctx);
  // `in` has `numel` elements; `out` this rank's shard_range of them.
  void reduce_scatter(std::byte* out, const std::byte* in, int64_t numel, at::ScalarType dtype,
                      ReduceOp op, const OpContext& ctx);
  // `out` has `numel` elements; `in` this rank's shard_range of them.
  void all_gather(std::byte* out, const std::byte* in, int64_t numel, size_t elem_bytes,
                  const OpContext& ctx);
  void broadcast(std::byte* data, int64_t numel, size_t elem_bytes, int root, const OpContext& ctx);
  // `in` and `out` have `numel` elements: size() blocks of numel / size().
  void all_to_all(std::byte* out, const std::byte* in, int64_t numel, size_t elem_bytes,
                  const OpContext& ctx);
  void barrier(const OpContext& ctx);

 private:
  using ChunkStage = ::tandem::detail::ChunkStage;
  using Counter = std::atomic<uint64_t> RankControl::*;
  // The ChunkTransport of one operation; see shm_collectives.cpp.
  class Transport;
  // The stores write_own() uses in the current operation.
  enum class Stores { kPlain, kStreaming, kMeasured };

  // Numbers the next `chunks` chunks of the protocol; returns the first.
  uint64_t take_chunks(int64_t chunks) {
    const uint64_t first = next_chunk_;
    next_chunk_ += static_cast<uint64_t>(chunks);
    return first;
  }
  static Counter counter_of(ChunkStage stage);
  // Waits until every rank other than this one (or only `only`, if >= 0) has
  // `counter` >= target.
  void wait_ranks(ShmWaiter& waiter, Counter counter, uint64_t target, int only,
                  const WaitStage& stage) const;
  // Waits until every rank has finished reading the chunk that last used
  // chunk g's buffer.
  void wait_buffer_free(ShmWaiter& waiter, uint64_t g, const WaitStage& stage) const;
  void publish(Counter counter, uint64_t g) const;
  // Picks the stores that write_own() uses in an operation of `op_bytes`,
  // probing the links between the ranks first now and then. Collective:
  // every operation that writes own buffers calls it first, on every rank,
  // with the same op_bytes. See Note [Streaming stores].
  void choose_stores(ShmWaiter& waiter, size_t op_bytes);
  // Passes a token around the ranks a few times; true if a cache line's trip
  // from one rank to the next is slow. Collective; bounded by the waiter.
  bool links_are_slow(ShmWaiter& waiter);
  // Copies `bytes` into this rank's own buffers with the stores
  // choose_stores() picked.
  void write_own(std::byte* dst, const std::byte* src, size_t bytes);
  // Copies with plain or streaming stores, whichever has cost less lately.
  void write_own_measured(std::byte* dst, const std::byte* src, size_t bytes);
  int buffer_of(uint64_t g) const {
    return ::tandem::detail::chunk_buffer(g, segment_.layout().buffers);
  }
  // Slice `s` of rank `r`'s buffer `b` (the two-shot layout).
  std::byte* slice(int r, int b, int s) const { return segment_.slot(r, b) + s * slice_stride_; }

  const ShmSegment& segment_;
  const WaitPolicy policy_;
  const int rank_;
  const int size_;
  const size_t slice_stride_;  // bytes; slot_bytes / size, 64-aligned
  uint64_t next_chunk_ = 0;    // chunks used by earlier operations; the same on every rank
  // Link probes; see Note [Streaming stores]. The counts are the same on
  // every rank, so that all probe in the same operations.
  const bool probe_links_;        // false with more ranks than cores
  uint64_t probes_ = 0;           // probes run so far
  uint64_t ops_since_probe_ = 0;  // operations that used the last verdict
  size_t bytes_since_probe_ = 0;  // their total size
  bool slow_links_ = false;       // the last probe's verdict
  Stores stores_ = Stores::kPlain;
  // Recent cost of writing own buffers, ns per byte, for Stores::kMeasured:
  // [0] plain stores, [1] streaming stores; 0 until measured.
  double write_ns_per_byte_[2] = {0, 0};
  uint64_t timed_writes_ = 0;
};

}  // namespace tandem::comm::detail
