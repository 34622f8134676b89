// One direction of a point-to-point pair of the shm backend: a ring of
// pieces in the segment that only `src` writes and only `dst` reads, apart
// from the collective buffers, so that sends and receives progress on their
// own threads while a collective runs. A message is one or more pieces, each
// headed by (tag, message size, offset); a receive takes the next message
// with its tag and sets messages with other tags aside for later receives.
// Thread-safe: each side's calls are serialised by a mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <vector>

#include "comm/shm/shm_segment.h"
#include "comm/shm/shm_waiter.h"
#include "tandem/comm/communicator.h"

namespace tandem::comm::detail {

class ShmChannel {
 public:
  ShmChannel(const ShmSegment& segment, int src, int dst, WaitPolicy policy)
      : segment_(segment), src_(src), dst_(dst), policy_(policy) {}
  ShmChannel(const ShmChannel&) = delete;
  ShmChannel& operator=(const ShmChannel&) = delete;

  // Sender side (this rank is src). Copies the message into the ring; returns
  // once its last piece is there (not when dst has it). Blocks while the ring
  // is full, until ctx.deadline (TimeoutError) or dst dies (PeerError).
  void send(const std::byte* data, size_t bytes, int64_t tag, const OpContext& ctx);

  // Receiver side (this rank is dst). Fills `data` with the next message from
  // src carrying `tag`. Blocks until it has arrived, ctx.deadline passes
  // (TimeoutError) or src dies (PeerError). Throws InvalidArgument if that
  // message is not `bytes` long (the message stays for a later receive).
  void recv(std::byte* data, size_t bytes, int64_t tag, const OpContext& ctx);

 private:
  PieceHeader wait_piece(ShmWaiter& waiter, const WaitStage& stage);
  void read_message(ShmWaiter& waiter, const PieceHeader& first, std::byte* data,
                    const WaitStage& stage);

  const ShmSegment& segment_;
  const int src_;
  const int dst_;
  const WaitPolicy policy_;
  std::mutex mutex_;  // serialises send() calls, or recv() calls
  std::map<int64_t, std::deque<std::vector<std::byte>>> stash_;  // guarded by mutex_; by tag
};

}  // namespace tandem::comm::detail
