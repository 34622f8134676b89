#include "comm/shm/shm_channel.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "tandem/core/check.h"

namespace tandem::comm::detail {

void ShmChannel::send(const std::byte* data, size_t bytes, int64_t tag, const OpContext& ctx) {
  std::lock_guard<std::mutex> lock(mutex_);
  ChannelControl& ch = segment_.channel(src_, dst_);
  const ShmLayout& layout = segment_.layout();
  const uint64_t pieces = static_cast<uint64_t>(layout.pieces);
  uint64_t head = ch.head.load(std::memory_order_relaxed);  // only this side writes it
  ShmWaiter waiter(segment_, ctx, policy_);
  const WaitStage stage{"ring full, not received yet"};
  size_t offset = 0;
  do {
    size_t n = std::min(layout.piece_bytes, bytes - offset);
    waiter.wait([&] { return head - ch.tail.load(std::memory_order_acquire) < pieces; },
                [&] { return std::vector<int>{dst_}; }, stage);
    std::byte* p = segment_.piece(src_, dst_, static_cast<int>(head % pieces));
    PieceHeader h{tag, bytes, offset, n};
    std::memcpy(p, &h, sizeof(h));
    if (n > 0) std::memcpy(p + kPieceHeaderBytes, data + offset, n);
    ch.head.store(++head, std::memory_order_release);
    offset += n;
  } while (offset < bytes);
}

PieceHeader ShmChannel::wait_piece(ShmWaiter& waiter, const WaitStage& stage) {
  ChannelControl& ch = segment_.channel(src_, dst_);
  uint64_t tail = ch.tail.load(std::memory_order_relaxed);  // only this side writes it
  waiter.wait([&] { return ch.head.load(std::memory_order_acquire) > tail; },
              [&] { return std::vector<int>{src_}; }, stage);
  PieceHeader h;
  std::memcpy(&h, segment_.piece(src_, dst_, static_cast<int>(tail % segment_.layout().pieces)),
              sizeof(h));
  return h;
}

// Copies the message whose first piece is `first` (not yet consumed) into
// `data`, consuming its pieces.
void ShmChannel::read_message(ShmWaiter& waiter, const PieceHeader& first, std::byte* data,
                              const WaitStage& stage) {
  ChannelControl& ch = segment_.channel(src_, dst_);
  PieceHeader h = first;
  while (true) {
    uint64_t tail = ch.tail.load(std::memory_order_relaxed);
    TANDEM_ASSERT(h.offset + h.bytes <= first.message_bytes && h.tag == first.tag,
                  "shm channel {} -> {}: piece at {} (+{}) of tag {} does not belong to a message "
                  "of {} bytes with tag {}",
                  src_, dst_, h.offset, h.bytes, h.tag, first.message_bytes, first.tag);
    const std::byte* p =
        segment_.piece(src_, dst_, static_cast<int>(tail % segment_.layout().pieces));
    if (h.bytes > 0) std::memcpy(data + h.offset, p + kPieceHeaderBytes, h.bytes);
    ch.tail.store(tail + 1, std::memory_order_release);
    if (h.offset + h.bytes >= first.message_bytes) return;
    h = wait_piece(waiter, stage);
  }
}

void ShmChannel::recv(std::byte* data, size_t bytes, int64_t tag, const OpContext& ctx) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto size_error = [&](size_t got) {
    return InvalidArgument(fmt::format(
        "rank {}: {}: the message from rank {} with tag {} has {} bytes but the tensor has {}; "
        "sender and receiver must agree on dtype and length (the message is kept for a later "
        "recv of that size)",
        dst_, ctx.description, src_, tag, got, bytes));
  };
  auto it = stash_.find(tag);
  if (it != stash_.end() && !it->second.empty()) {
    std::vector<std::byte>& msg = it->second.front();
    if (msg.size() != bytes) throw size_error(msg.size());
    if (bytes > 0) std::memcpy(data, msg.data(), bytes);
    it->second.pop_front();
    return;
  }
  ShmWaiter waiter(segment_, ctx, policy_);
  const WaitStage stage{"no message sent yet"};
  while (true) {
    PieceHeader first = wait_piece(waiter, stage);
    TANDEM_ASSERT(first.offset == 0, "shm channel {} -> {}: a message starts at offset {}", src_,
                  dst_, first.offset);
    if (first.tag == tag && first.message_bytes == bytes) {
      read_message(waiter, first, data, stage);
      return;
    }
    // Another tag (or the wrong size): keep it for the receive it belongs to.
    std::vector<std::byte> msg(first.message_bytes);
    read_message(waiter, first, msg.data(), stage);
    stash_[first.tag].push_back(std::move(msg));
    if (first.tag == tag) throw size_error(first.message_bytes);
  }
}

}  // namespace tandem::comm::detail
