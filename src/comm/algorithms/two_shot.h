// The two-shot all_reduce and its first half, the reduce-scatter, over a
// ChunkTransport (chunk_plan.h): for large operations, where moving the
// data, not the rounds of flags, is what costs.
//
// Chunk g holds slice s = the next plan.chunk elements of shard_range s.
// Rank r copies its slices s != r in, reduces slice r over all ranks (its
// own input read in place) into its output and its buffer, and then copies
// every peer's reduced slice out. Each rank thus moves about 3x the data
// once, and the reduction work is split n ways. The three stages run as a
// software pipeline (copy chunk t in, reduce chunk t-1, copy chunk t-2 out);
// rotating through 4 buffers also matters on its own: writing lines that a
// peer core read a moment ago costs more than writing lines it read a few
// chunks ago. The reduce-scatter stops after the reduce stage. Every slice
// is reduced once, by its owner, in rank order, so every rank ends with the
// same bits.
//
// Collective over the transport's ranks: every rank calls it with the same
// plan and `first_chunk`; it returns once this rank's output is complete, or
// throws what a transport wait throws. Header-only so that the backend's
// transport inlines into it (the shm all_reduce is a hot path).
#pragma once

#include <cstddef>
#include <cstring>
#include <vector>

#include "comm/algorithms/chunk_plan.h"

namespace tandem::detail {

// `plan` cuts `numel` elements into slices of at most transport.slice_bytes();
// chunk t of the operation is chunk first_chunk + t of the protocol.
// gather: all_reduce, in place (out == in; every rank ends with every
// slice); else reduce_scatter (`out` holds this rank's shard only).
template <ChunkTransport Transport>
void two_shot(Transport& tr, const ChunkPlan& plan, uint64_t first_chunk, std::byte* out,
              const std::byte* in, at::ScalarType dtype, ReduceOp op, bool gather) {
  const int rank = tr.rank();
  const int size = tr.size();
  std::vector<const void*> srcs(static_cast<size_t>(size));
  auto copy_in = [&](int64_t t) {
    const uint64_t g = first_chunk + t;
    tr.wait_free(g, {kWaitBufferFree, t, plan.chunks});
    for (int s = 0; s < size; ++s) {
      if (s != rank && plan.count(s, t) > 0) {
        tr.write_own(tr.slice(rank, g, s), in + plan.offset(s, t), plan.bytes(s, t));
      }
    }
    tr.publish(ChunkStage::kCopied, g);
  };
  auto reduce = [&](int64_t t) {
    const uint64_t g = first_chunk + t;
    tr.wait_stage(ChunkStage::kCopied, g, -1, {kWaitCopiedIn, t, plan.chunks});
    for (int j = 0; j < size; ++j) {
      srcs[j] =
          j == rank ? static_cast<const void*>(in + plan.offset(rank, t)) : tr.slice(j, g, rank);
    }
    std::byte* dst = gather ? out + plan.offset(rank, t)
                            : out + static_cast<size_t>(t * plan.chunk) * plan.elem_bytes;
    if (gather && !tr.plain_stores()) {
      // Reduce, then publish the slice from dst (still in this core's cache).
      tr.reduce(dtype, op, srcs.data(), size, plan.count(rank, t), dst, nullptr);
      tr.write_own(tr.slice(rank, g, rank), dst, plan.bytes(rank, t));
    } else {
      tr.reduce(dtype, op, srcs.data(), size, plan.count(rank, t), dst,
                gather ? tr.slice(rank, g, rank) : nullptr);
    }
    tr.publish(ChunkStage::kReduced, g);
    if (!gather) tr.publish(ChunkStage::kDone, g);
  };
  auto copy_out = [&](int64_t t) {
    if (!gather) return;
    const uint64_t g = first_chunk + t;
    tr.wait_stage(ChunkStage::kReduced, g, -1, {"slice not reduced yet", t, plan.chunks});
    for (int j = 0; j < size; ++j) {
      if (j != rank && plan.count(j, t) > 0) {
        std::memcpy(out + plan.offset(j, t), tr.slice(j, g, j), plan.bytes(j, t));
      }
    }
    tr.publish(ChunkStage::kDone, g);
  };
  run_pipeline(plan.chunks, copy_in, reduce, copy_out);
}

}  // namespace tandem::detail
