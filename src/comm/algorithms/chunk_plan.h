// The vocabulary of chunked collectives over per-rank buffers (two_shot.h,
// one_shot.h and the shm backend's gathers): how an operation cuts into
// chunks, the software pipeline that runs their stages, and what such an
// algorithm needs from its transport (the ChunkTransport concept). See Note
// [Chunk protocol] in chunk_plan.cpp. Pure, apart from what a transport
// does; thread-compatible.
#pragma once

#include <c10/core/ScalarType.h>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tandem/comm/communicator.h"

namespace tandem::detail {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// How an operation over the shard_range shards of a length-`numel` vector
// among `size` ranks cuts into chunks of at most `chunk_bytes`: chunk t of
// shard s is that shard's elements [t * chunk, (t + 1) * chunk). Every rank
// builds the same plan from the same sizes.
struct ChunkPlan {
  size_t elem_bytes = 0;
  std::vector<ShardRange> shards;
  int64_t chunk = 1;   // elements per chunk of a shard; at least 1
  int64_t chunks = 0;  // chunks of the longest shard (shard 0)

  ChunkPlan(int64_t numel, int size, size_t elem_bytes, size_t chunk_bytes);
  // Elements of chunk t of shard s (0 past the shard's end).
  int64_t count(int s, int64_t t) const {
    return std::clamp<int64_t>(shards[s].numel - t * chunk, 0, chunk);
  }
  size_t bytes(int s, int64_t t) const { return static_cast<size_t>(count(s, t)) * elem_bytes; }
  size_t total_bytes() const;
  // Byte offset of chunk t of shard s in the full vector.
  size_t offset(int s, int64_t t) const {
    return static_cast<size_t>(shards[s].offset + t * chunk) * elem_bytes;
  }
};

// The counters a rank raises for every chunk g, in this order (see Note
// [Chunk protocol]).
enum class ChunkStage { kCopied, kReduced, kDone };

// What a wait is for, for messages: "input not copied in yet" + " (chunk 3 of 16)".
struct WaitStage {
  std::string_view what;
  int64_t chunk = -1;  // -1: not a chunk
  int64_t chunks = 0;
};

// Stage names for wait messages, shared by the chunked algorithms.
inline constexpr std::string_view kWaitBufferFree = "an earlier chunk not read yet";
inline constexpr std::string_view kWaitCopiedIn = "input not copied in yet";

// The buffer chunk g uses among `buffers` per rank, and the kDone count
// every rank must have reached before chunk g may overwrite it (0: the
// buffer is still unused).
inline int chunk_buffer(uint64_t g, int buffers) {
  return static_cast<int>(g % static_cast<uint64_t>(buffers));
}
inline uint64_t chunk_buffer_free_after(uint64_t g, int buffers) {
  const uint64_t b = static_cast<uint64_t>(buffers);
  return g < b ? 0 : g - b + 1;
}

// Runs stages(0..K-1) over `chunks` chunks as a software pipeline: step i
// runs stage 0 of chunk i, stage 1 of chunk i - 1, ..., stage K-1 of chunk
// i - K + 1 (those that exist), in that order. So chunk t passes its stages
// in order, one step apart, and at most K chunks are in flight.
template <typename... Stages>
void run_pipeline(int64_t chunks, Stages&&... stages) {
  constexpr int64_t kDepth = sizeof...(Stages);
  for (int64_t i = 0; i < chunks + kDepth - 1; ++i) {
    int64_t k = 0;
    ((i - k >= 0 && i - k < chunks ? stages(i - k) : void(), ++k), ...);
  }
}

// What the chunked algorithms need from a transport: per-rank buffers that
// every rank of the group can read, and per-rank stage counters that only
// grow. Waits end by the operation's deadline (they throw; they never
// return early), and publish() is a release store that a wait_stage() on
// another rank acquires.
template <typename T>
concept ChunkTransport = requires(T& t, const T& ct, uint64_t g, int r, ChunkStage stage,
                                  const WaitStage& why, std::byte* dst, const std::byte* src,
                                  size_t bytes, at::ScalarType dtype, ReduceOp op,
                                  const void* const* srcs, int64_t count) {
  { ct.rank() } -> std::convertible_to<int>;
  { ct.size() } -> std::convertible_to<int>;
  // Rank r's buffer that chunk g uses (buffer_bytes() long), and slice s of
  // it (slice_bytes() long, the two-shot layout: one slice per rank).
  { ct.buffer(r, g) } -> std::same_as<std::byte*>;
  { ct.slice(r, g, r) } -> std::same_as<std::byte*>;
  { ct.buffer_bytes() } -> std::convertible_to<size_t>;
  { ct.slice_bytes() } -> std::convertible_to<size_t>;
  // Until every rank has finished reading the chunk that used g's buffer.
  t.wait_free(g, why);
  // This rank reached `stage` of chunk g.
  t.publish(stage, g);
  // Until every other rank (or, with r >= 0, rank r only) reached `stage` of g.
  t.wait_stage(stage, g, r, why);
  // Copies into this rank's own buffers; plain_stores(): with memcpy.
  t.write_own(dst, src, bytes);
  { ct.plain_stores() } -> std::convertible_to<bool>;
  // Reduces r arrays of `count` elements of `dtype` element-wise, in the
  // order given (so every rank that reduces the same sources gets the same
  // bits), into the first destination and, when not null, the second; the
  // first may alias a source, the second may not.
  t.reduce(dtype, op, srcs, r, count, dst, dst);
};

}  // namespace tandem::detail
