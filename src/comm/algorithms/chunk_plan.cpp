// Note [Chunk protocol]
// Every chunked collective moves its data through per-rank buffers, one
// chunk at a time. Chunks are numbered across operations (g = 0, 1, 2, ...;
// every rank derives the same count per operation from the sizes, so the
// numbers agree), and chunk g uses buffer g % buffers of each rank. Each rank
// owns three counters (ChunkStage) that it raises to g + 1 in order, with
// release stores:
//   copied  - its input of chunk g is in its buffer;
//   reduced - it has reduced (and published) its own slice of chunk g;
//   done    - it has finished reading other ranks' buffers for chunk g.
// A rank writes chunk g into its buffer only after every rank's done reached
// g - buffers + 1 (the chunk that used the buffer before is fully read), and
// reads a peer's buffer only after that peer's copied / reduced reached g + 1
// (acquire loads). Counters only grow, so no flag is ever reset and a late
// reader can never mistake an old chunk for a new one. A rank raises all three
// counters for every chunk even when a stage has nothing to do for it.
// The stages run as a software pipeline (run_pipeline), so a rank rarely
// waits: a three-stage operation with 4 buffers has 2 chunks in flight.
#include "comm/algorithms/chunk_plan.h"

#include <algorithm>

namespace tandem::detail {

ChunkPlan::ChunkPlan(int64_t numel, int size, size_t es, size_t chunk_bytes) : elem_bytes(es) {
  for (int s = 0; s < size; ++s) shards.push_back(shard_range(numel, size, s));
  chunk = std::max<int64_t>(1, static_cast<int64_t>(chunk_bytes / es));
  chunks = ceil_div(shards[0].numel, chunk);  // shard 0 is the longest
}

size_t ChunkPlan::total_bytes() const {
  return static_cast<size_t>(shards.back().offset + shards.back().numel) * elem_bytes;
}

}  // namespace tandem::detail
