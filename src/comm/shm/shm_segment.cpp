#include "comm/shm/shm_segment.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <new>
#include <random>
#include <sstream>
#include <thread>

#include "comm/timeout_hints.h"
#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/core/log.h"

namespace tandem::comm::detail {
namespace {

constexpr uint64_t kMagic = 0x54414e44454d5348ull;  // "TANDEMSH"
constexpr const char* kNameKey = "shm_segment";

// Collective buffers: 4 per rank of 512 KiB. Four in flight let a rank copy a
// chunk in while its peers still read the previous ones (see Note [Chunk
// protocol]); 512 KiB per rank keeps a 2-rank chunk inside one core's L2.
constexpr size_t kSlotBytes = size_t{512} << 10;
constexpr int kBuffers = 4;
// Point-to-point rings: 4 pieces of 128 KiB per direction of each pair.
constexpr size_t kPieceBytes = size_t{128} << 10;
constexpr int kPieces = 4;

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

std::string errno_text(int err) { return fmt::format("{} (errno {})", std::strerror(err), err); }

// Fields 3 (state) and 22 (starttime) of /proc/<pid>/stat.
struct ProcStat {
  char state = '?';
  uint64_t start_time = 0;
};

std::optional<ProcStat> read_proc_stat(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  // The command name (field 2) may hold spaces and parentheses; fields after
  // the last ')' are plain.
  auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 1));
  ProcStat st;
  std::string field;
  rest >> st.state;
  for (int i = 4; i <= 22 && rest >> field; ++i) {
    if (i == 22) st.start_time = std::strtoull(field.c_str(), nullptr, 10);
  }
  if (st.start_time == 0) return std::nullopt;
  return st;
}

// "/tandem-<16 hex digits>-<group>": random, so that jobs sharing a host never
// meet, and named after the group for whoever lists /dev/shm meanwhile.
std::string make_segment_name(const std::string& group) {
  std::random_device rd;
  uint64_t token = (uint64_t{rd()} << 32) ^ rd() ^
                   static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^
                   (static_cast<uint64_t>(getpid()) << 16);
  std::string clean;
  for (char c : group.substr(0, 64)) {
    clean += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') ? c : '_';
  }
  return fmt::format("/tandem-{:016x}-{}", token, clean);
}

std::byte* map_segment(int fd, size_t bytes, int rank, const std::string& name) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    throw Error(fmt::format("rank {}: shm: cannot map segment {} ({} bytes): {}", rank, name, bytes,
                            errno_text(err)));
  }
  return static_cast<std::byte*>(p);
}

// Rank 0: creates, sizes, maps and initialises the segment.
std::byte* create_segment(const std::string& name, const ShmLayout& layout) {
  int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    int err = errno;
    throw Error(fmt::format("rank 0: shm: cannot create segment {} in /dev/shm: {}", name,
                            errno_text(err)));
  }
  // posix_fallocate reserves the pages now: on a full /dev/shm we get an error
  // here instead of a SIGBUS on first touch.
  int err = ftruncate(fd, static_cast<off_t>(layout.total_bytes)) == 0
                ? posix_fallocate(fd, 0, static_cast<off_t>(layout.total_bytes))
                : errno;
  if (err != 0) {
    close(fd);
    shm_unlink(name.c_str());
    throw Error(
        fmt::format("rank 0: shm: cannot size segment {} to {} bytes: {}; is /dev/shm "
                    "full or too small (df /dev/shm)?",
                    name, layout.total_bytes, errno_text(err)));
  }
  std::byte* base = nullptr;
  try {
    base = map_segment(fd, layout.total_bytes, 0, name);
  } catch (...) {
    close(fd);
    shm_unlink(name.c_str());
    throw;
  }
  close(fd);
  auto* header = new (base + layout.header_offset) SegmentHeader();
  header->magic = kMagic;
  header->total_bytes = layout.total_bytes;
  header->world_size = layout.world_size;
  for (int r = 0; r < layout.world_size; ++r) {
    new (base + layout.control_offset + r * sizeof(RankControl)) RankControl();
  }
  int pairs = layout.world_size * layout.world_size;
  for (int i = 0; i < pairs; ++i) {
    new (base + layout.channel_offset + i * sizeof(ChannelControl)) ChannelControl();
  }
  return base;
}

std::string get_segment_name(const BackendOptions& options, const Deadline& deadline) {
  try {
    return options.store->get(kNameKey, std::max(deadline.remaining(), Millis(1)));
  } catch (const TimeoutError& e) {
    throw TimeoutError(fmt::format(
        "rank {}: shm setup of group '{}' timed out after {}: rank 0 never published the "
        "segment name ({}); read rank 0's log, or {}",
        options.rank, options.group_name, format_duration(deadline.elapsed()), e.what(),
        tandem::detail::kCommTimeoutHint));
  }
}

// Ranks > 0: opens and maps the segment rank 0 created, and checks it is one
// of this group's size.
std::byte* open_segment(const std::string& name, const ShmLayout& layout, int rank) {
  int fd = shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) {
    int err = errno;
    throw Error(
        fmt::format("rank {}: shm: cannot open segment {} that rank 0 published: {}; are "
                    "all ranks on one host?",
                    rank, name, errno_text(err)));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != layout.total_bytes) {
    close(fd);
    throw Error(
        fmt::format("rank {}: shm: segment {} has {} bytes but this rank expects {}; do all "
                    "ranks agree on the world size?",
                    rank, name, static_cast<int64_t>(st.st_size), layout.total_bytes));
  }
  std::byte* base = nullptr;
  try {
    base = map_segment(fd, layout.total_bytes, rank, name);
  } catch (...) {
    close(fd);
    throw;
  }
  close(fd);
  auto* header = reinterpret_cast<SegmentHeader*>(base + layout.header_offset);
  if (header->magic != kMagic || header->world_size != layout.world_size) {
    munmap(base, layout.total_bytes);
    throw Error(fmt::format("rank {}: shm: segment {} is not a Tandem segment of {} ranks", rank,
                            name, layout.world_size));
  }
  return base;
}

}  // namespace

ShmLayout make_shm_layout(int world_size) {
  TANDEM_CHECK(world_size >= 1, "shm: world size must be >= 1 (got {})", world_size);
  ShmLayout l;
  l.world_size = world_size;
  l.slot_bytes = kSlotBytes;
  l.buffers = kBuffers;
  l.piece_bytes = kPieceBytes;
  l.pieces = kPieces;
  const size_t n = static_cast<size_t>(world_size);
  l.header_offset = 0;
  l.control_offset = align_up(sizeof(SegmentHeader), kLineBytes);
  l.channel_offset = align_up(l.control_offset + n * sizeof(RankControl), kLineBytes);
  l.slots_offset = align_up(l.channel_offset + n * n * sizeof(ChannelControl), 4096);
  l.pieces_offset = l.slots_offset + n * kBuffers * kSlotBytes;
  size_t piece_stride = kPieceHeaderBytes + kPieceBytes;
  l.total_bytes = align_up(l.pieces_offset + n * n * kPieces * piece_stride, 4096);
  return l;
}

ShmSegment::ShmSegment(int rank, const ShmLayout& layout, std::byte* base)
    : rank_(rank), layout_(layout), base_(base), checkable_(layout.world_size, 0) {}

ShmSegment::~ShmSegment() { munmap(base_, layout_.total_bytes); }

std::unique_ptr<ShmSegment> ShmSegment::attach(const BackendOptions& options,
                                               Millis setup_timeout) {
  Deadline deadline(setup_timeout, "shm setup timeout");
  ShmLayout layout = make_shm_layout(options.size);
  std::string name;
  std::byte* base = nullptr;
  if (options.rank == 0) {
    name = make_segment_name(options.group_name);
    base = create_segment(name, layout);
    if (options.size > 1) {
      try {
        options.store->set(kNameKey, name);
      } catch (...) {
        munmap(base, layout.total_bytes);
        shm_unlink(name.c_str());
        throw;
      }
    }
  } else {
    name = get_segment_name(options, deadline);
    base = open_segment(name, layout, options.rank);
  }
  std::unique_ptr<ShmSegment> seg(new ShmSegment(options.rank, layout, base));
  try {
    RankControl& mine = seg->control(options.rank);
    auto st = read_proc_stat("self");
    mine.start_time = st ? st->start_time : 0;
    mine.pid.store(getpid(), std::memory_order_release);
    seg->wait_for_peers(options, deadline);
  } catch (...) {
    // Whoever gives up removes the name: nothing may outlive a failed setup.
    shm_unlink(name.c_str());
    throw;
  }
  // Every rank has it mapped: the name is no longer needed. Each rank unlinks
  // (ENOENT after the first), so the name goes even if rank 0 died just now.
  shm_unlink(name.c_str());
  log::debug("rank {}: shm segment {} ({} bytes) mapped by {} ranks", options.rank, name,
             layout.total_bytes, options.size);
  return seg;
}

void ShmSegment::wait_for_peers(const BackendOptions& options, const Deadline& deadline) {
  Backoff backoff(200, std::chrono::microseconds(2000));
  while (true) {
    std::vector<int> missing;
    for (int r = 0; r < size(); ++r) {
      if (pid(r) == 0) missing.push_back(r);
    }
    if (missing.empty()) break;
    if (deadline.expired()) {
      throw TimeoutError(fmt::format(
          "rank {}: shm setup of group '{}' timed out after {} waiting for rank(s) {} to map "
          "the segment; read those ranks' logs, or {}",
          rank_, options.group_name, format_duration(deadline.elapsed()), fmt::join(missing, ", "),
          tandem::detail::kCommTimeoutHint));
    }
    backoff.pause();
  }
  // A peer's process is checkable only if this rank sees it under the same
  // pid with the same start time (not so across pid namespaces).
  for (int r = 0; r < size(); ++r) {
    const RankControl& c = control(r);
    auto st = read_proc_stat(std::to_string(pid(r)));
    checkable_[r] = (st && c.start_time != 0 && st->start_time == c.start_time) ? 1 : 0;
    if (!checkable_[r]) {
      log::info(
          "rank {}: shm: cannot watch rank {}'s process (pid {}); its failures are found "
          "by timeouts only",
          rank_, r, pid(r));
    }
  }
}

SegmentHeader& ShmSegment::header() const {
  return *reinterpret_cast<SegmentHeader*>(base_ + layout_.header_offset);
}

RankControl& ShmSegment::control(int rank) const {
  return reinterpret_cast<RankControl*>(base_ + layout_.control_offset)[rank];
}

ChannelControl& ShmSegment::channel(int src, int dst) const {
  return reinterpret_cast<ChannelControl*>(base_ +
                                           layout_.channel_offset)[src * layout_.world_size + dst];
}

std::byte* ShmSegment::slot(int rank, int buffer) const {
  return base_ + layout_.slots_offset +
         (static_cast<size_t>(rank) * layout_.buffers + buffer) * layout_.slot_bytes;
}

std::byte* ShmSegment::piece(int src, int dst, int index) const {
  size_t stride = kPieceHeaderBytes + layout_.piece_bytes;
  size_t ring = static_cast<size_t>(src) * layout_.world_size + dst;
  return base_ + layout_.pieces_offset + (ring * layout_.pieces + index) * stride;
}

bool ShmSegment::alive(int rank) const {
  if (rank == rank_ || !checkable_[rank]) return true;
  pid_t p = pid(rank);
  if (kill(p, 0) != 0 && errno == ESRCH) return false;
  auto st = read_proc_stat(std::to_string(p));
  if (!st) return false;  // gone between kill() and the read
  if (st->state == 'Z' || st->state == 'X' || st->state == 'x') return false;
  return st->start_time == control(rank).start_time;  // else the pid was reused
}

void ShmSegment::post_abort(AbortKind kind, const std::string& message) const {
  SegmentHeader& h = header();
  int32_t expected = -1;
  if (!h.abort_rank.compare_exchange_strong(expected, rank_, std::memory_order_acq_rel)) return;
  h.abort_kind = kind;
  size_t n = std::min(message.size(), sizeof(h.abort_message) - 1);
  std::memcpy(h.abort_message, message.data(), n);
  h.abort_message[n] = '\0';
  h.abort_ready.store(1, std::memory_order_release);
}

std::optional<ShmSegment::Abort> ShmSegment::abort() const {
  const SegmentHeader& h = header();
  int32_t r = h.abort_rank.load(std::memory_order_acquire);
  if (r < 0 || h.abort_ready.load(std::memory_order_acquire) == 0) return std::nullopt;
  Abort a;
  a.rank = r;
  a.kind = h.abort_kind;
  a.message.assign(h.abort_message, strnlen(h.abort_message, sizeof(h.abort_message)));
  return a;
}

}  // namespace tandem::comm::detail
