// The one-shot all_reduce over a ChunkTransport (chunk_plan.h), for small
// operations: every rank copies its whole chunk into its buffer and reduces
// all buffers itself. It reads (size - 1) x the data from other ranks where
// two-shot reads about 1x, but it saves a round of flags, which is what
// costs at small sizes. Every rank reduces in rank order, so all get
// bitwise equal results.
//
// Collective over the transport's ranks: every rank calls it with the same
// numel and `first_chunk`; it returns once `data` holds the result, or
// throws what a transport wait throws. Header-only, like two_shot.h.
#pragma once

#include <cstddef>
#include <cstring>
#include <vector>

#include "comm/algorithms/chunk_plan.h"

namespace tandem::detail {

// An all_reduce of `bytes` over `size` ranks goes one-shot up to
// kOneShotBytes / size: one-shot's extra reading grows with the ranks, its
// saved round of flags does not. The measured crossover is in docs/comm.md.
inline constexpr size_t kOneShotBytes = size_t{256} << 10;
inline bool prefer_one_shot(size_t bytes, int size) {
  return bytes <= kOneShotBytes / static_cast<size_t>(size);
}

// Elements per chunk: as many as fill a buffer of `buffer_bytes`.
inline int64_t one_shot_chunk(size_t buffer_bytes, size_t elem_bytes) {
  return static_cast<int64_t>(buffer_bytes / elem_bytes);
}
// The chunks an operation of `numel` elements uses.
inline int64_t one_shot_chunks(int64_t numel, size_t buffer_bytes, size_t elem_bytes) {
  return ceil_div(numel, one_shot_chunk(buffer_bytes, elem_bytes));
}

// all_reduce of `numel` elements of `dtype` at `data`, in place; chunk t of
// the operation is chunk first_chunk + t of the protocol (it uses
// one_shot_chunks(numel, tr.buffer_bytes(), element size) of them).
template <ChunkTransport Transport>
void one_shot(Transport& tr, uint64_t first_chunk, std::byte* data, int64_t numel,
              at::ScalarType dtype, ReduceOp op) {
  const int rank = tr.rank();
  const int size = tr.size();
  const size_t es = c10::elementSize(dtype);
  const int64_t chunk = one_shot_chunk(tr.buffer_bytes(), es);
  const int64_t chunks = ceil_div(numel, chunk);
  std::vector<const void*> srcs(static_cast<size_t>(size));
  auto count = [&](int64_t t) { return std::min(chunk, numel - t * chunk); };
  auto copy_in = [&](int64_t t) {
    const uint64_t g = first_chunk + t;
    tr.wait_free(g, {kWaitBufferFree, t, chunks});
    std::memcpy(tr.buffer(rank, g), data + t * chunk * es, count(t) * es);
    tr.publish(ChunkStage::kCopied, g);
  };
  auto reduce = [&](int64_t t) {
    const uint64_t g = first_chunk + t;
    tr.wait_stage(ChunkStage::kCopied, g, -1, {kWaitCopiedIn, t, chunks});
    std::byte* mine = data + t * chunk * es;
    for (int j = 0; j < size; ++j) {
      srcs[j] = j == rank ? static_cast<const void*>(mine) : tr.buffer(j, g);
    }
    tr.reduce(dtype, op, srcs.data(), size, count(t), mine, nullptr);
    tr.publish(ChunkStage::kReduced, g);
    tr.publish(ChunkStage::kDone, g);
  };
  run_pipeline(chunks, copy_in, reduce);
}

}  // namespace tandem::detail
