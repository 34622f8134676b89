// The POSIX shared-memory segment of one shm communicator: its layout (a
// header, one control line per rank, per-pair point-to-point rings and the
// collective buffers), how the ranks create and map it, and what each rank
// knows about the others' processes.
//
// Setup is collective: rank 0 creates the segment under a random name,
// publishes the name through the group's store, every rank maps it and
// writes its pid, and once all have mapped it every rank unlinks the name,
// so that nothing is left in /dev/shm even if ranks are SIGKILLed later.
// Thread-safe after setup: all shared state is atomics or buffers whose
// ownership the protocols in shm_communicator.cpp and shm_channel.cpp hand
// over with those atomics.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tandem/comm/backend.h"
#include "tandem/core/deadline.h"

namespace tandem::comm::detail {

// 128 bytes: a cache line plus its adjacent-line prefetch partner.
inline constexpr size_t kLineBytes = 128;

// One rank's progress flags; written by that rank only. See Note [Chunk
// protocol] in shm_communicator.cpp for the meaning of the chunk counters.
struct alignas(kLineBytes) RankControl {
  std::atomic<uint64_t> copied{0};   // chunks this rank has written into its slot
  std::atomic<uint64_t> reduced{0};  // chunks whose own slice this rank has reduced
  std::atomic<uint64_t> done{0};     // chunks this rank has finished reading
  std::atomic<uint64_t> seq{0};      // the last collective this rank entered
  uint64_t start_time = 0;           // /proc/<pid>/stat field 22; 0 if unknown
  std::atomic<int32_t> pid{0};       // set (after start_time) once mapped
  // Rounds of the link probe this rank has passed on, on a line of its own so
  // that the probe times one line's trip only; see Note [Streaming stores]
  // in shm_collectives.cpp.
  alignas(kLineBytes) std::atomic<uint64_t> probe{0};
};

// One direction of a point-to-point pair; see shm_channel.h.
struct alignas(kLineBytes) ChannelControl {
  alignas(kLineBytes) std::atomic<uint64_t> head{0};  // pieces the sender published
  alignas(kLineBytes) std::atomic<uint64_t> tail{0};  // pieces the receiver consumed
};

enum class AbortKind : int32_t { kTimeout = 1, kPeer = 2 };

struct alignas(kLineBytes) SegmentHeader {
  uint64_t magic = 0;
  uint64_t total_bytes = 0;
  int32_t world_size = 0;
  // The first rank that gave up on this communicator (-1: none), so that the
  // others stop waiting for it; abort_ready turns 1 once kind and message
  // are written.
  std::atomic<int32_t> abort_rank{-1};
  std::atomic<int32_t> abort_ready{0};
  AbortKind abort_kind = AbortKind::kTimeout;
  char abort_message[1024] = {};
};

// Sizes of the parts of a segment; the same on every rank of a group.
struct ShmLayout {
  int world_size = 1;
  size_t slot_bytes = 0;   // one collective buffer of one rank
  int buffers = 0;         // collective buffers per rank (chunks in flight)
  size_t piece_bytes = 0;  // payload of one point-to-point piece
  int pieces = 0;          // pieces per point-to-point ring
  size_t header_offset = 0;
  size_t control_offset = 0;
  size_t channel_offset = 0;
  size_t slots_offset = 0;
  size_t pieces_offset = 0;
  size_t total_bytes = 0;
};

// Each point-to-point piece starts with this header.
struct PieceHeader {
  int64_t tag = 0;
  uint64_t message_bytes = 0;  // the whole message
  uint64_t offset = 0;         // of this piece in the message
  uint64_t bytes = 0;          // of this piece
};
inline constexpr size_t kPieceHeaderBytes = 64;

// The layout for `world_size` ranks. Pure.
ShmLayout make_shm_layout(int world_size);

class ShmSegment {
 public:
  // Collective over options.size ranks; see the file comment. Blocks until
  // every rank has mapped the segment or `setup_timeout` passes (TimeoutError
  // naming the ranks that never arrived). Throws Error when the segment
  // cannot be created or mapped (naming /dev/shm and the errno).
  static std::unique_ptr<ShmSegment> attach(const BackendOptions& options, Millis setup_timeout);
  ~ShmSegment();
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  const ShmLayout& layout() const { return layout_; }
  int rank() const { return rank_; }
  int size() const { return layout_.world_size; }

  SegmentHeader& header() const;
  RankControl& control(int rank) const;
  ChannelControl& channel(int src, int dst) const;
  // Collective buffer `buffer` of `rank`: layout().slot_bytes bytes.
  std::byte* slot(int rank, int buffer) const;
  // Point-to-point piece `index` of the src -> dst ring: header + payload.
  std::byte* piece(int src, int dst, int index) const;

  pid_t pid(int rank) const { return control(rank).pid.load(std::memory_order_acquire); }
  // False once `rank`'s process is known to be gone (exited, killed, or a
  // zombie). Ranks whose process this one cannot see (another pid namespace)
  // always count as alive; their deadline still bounds every wait.
  bool alive(int rank) const;

  // Records that `rank` gave up with `message`; only the first call wins.
  void post_abort(AbortKind kind, const std::string& message) const;
  struct Abort {
    int rank = -1;
    AbortKind kind = AbortKind::kTimeout;
    std::string message;
  };
  // The abort another rank (or this one) posted, if any.
  std::optional<Abort> abort() const;

 private:
  ShmSegment(int rank, const ShmLayout& layout, std::byte* base);
  void wait_for_peers(const BackendOptions& options, const Deadline& deadline);

  const int rank_;
  const ShmLayout layout_;
  std::byte* const base_;
  std::vector<char> checkable_;  // per rank: may alive() consult /proc? Set in setup.
};

}  // namespace tandem::comm::detail
