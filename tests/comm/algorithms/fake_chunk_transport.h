// An in-process ChunkTransport (comm/algorithms/chunk_plan.h) for testing
// the chunked algorithms without shared memory: `size` ranks as threads over
// plain buffers and atomic counters, with small buffers so that operations
// take many chunks and reuse every buffer. Waits spin with yields and give
// up after a deadline (throwing), so a wrong protocol fails, never hangs.
// Thread-safe across its ranks, as the real transport is.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "comm/algorithms/chunk_plan.h"
#include "comm/shm/reduce_kernels.h"

namespace tandem::testing {

class FakeChunkGroup {
 public:
  FakeChunkGroup(int size, int buffers, size_t buffer_bytes)
      : size_(size),
        buffers_(buffers),
        buffer_bytes_(buffer_bytes),
        slice_bytes_(buffer_bytes / static_cast<size_t>(size) / 64 * 64),
        memory_(static_cast<size_t>(size * buffers) * buffer_bytes),
        counters_(static_cast<size_t>(size)) {}

  // One rank's view: the transport an algorithm runs on.
  class Rank {
   public:
    Rank(FakeChunkGroup& group, int rank) : g_(group), rank_(rank) {}
    int rank() const { return rank_; }
    int size() const { return g_.size_; }
    std::byte* buffer(int r, uint64_t g) const {
      const int b = detail::chunk_buffer(g, g_.buffers_);
      return g_.memory_.data() + static_cast<size_t>(r * g_.buffers_ + b) * g_.buffer_bytes_;
    }
    std::byte* slice(int r, uint64_t g, int s) const {
      return buffer(r, g) + static_cast<size_t>(s) * g_.slice_bytes_;
    }
    size_t buffer_bytes() const { return g_.buffer_bytes_; }
    size_t slice_bytes() const { return g_.slice_bytes_; }
    void wait_free(uint64_t g, const detail::WaitStage& why) {
      const uint64_t target = detail::chunk_buffer_free_after(g, g_.buffers_);
      if (target > 0) wait_all(detail::ChunkStage::kDone, target, -1, why);
    }
    void publish(detail::ChunkStage stage, uint64_t g) {
      counter(rank_, stage).store(g + 1, std::memory_order_release);
    }
    void wait_stage(detail::ChunkStage stage, uint64_t g, int only, const detail::WaitStage& why) {
      wait_all(stage, g + 1, only, why);
    }
    void write_own(std::byte* dst, const std::byte* src, size_t bytes) {
      std::memcpy(dst, src, bytes);
    }
    bool plain_stores() const { return true; }
    void reduce(at::ScalarType dtype, ReduceOp op, const void* const* srcs, int n, int64_t count,
                void* dst, void* dst2) {
      comm::detail::reduce_arrays(dtype, op, srcs, n, count, dst, dst2);
    }

   private:
    std::atomic<uint64_t>& counter(int r, detail::ChunkStage stage) {
      return g_.counters_[static_cast<size_t>(r)][static_cast<size_t>(stage)];
    }
    void wait_all(detail::ChunkStage stage, uint64_t target, int only,
                  const detail::WaitStage& why) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      for (int r = 0; r < size(); ++r) {
        if (r == rank_ || (only >= 0 && r != only)) continue;
        while (counter(r, stage).load(std::memory_order_acquire) < target) {
          if (std::chrono::steady_clock::now() > deadline) {
            throw std::runtime_error("rank " + std::to_string(rank_) +
                                     " waited 20 s: " + std::string(why.what) + ", chunk " +
                                     std::to_string(why.chunk));
          }
          std::this_thread::yield();
        }
      }
    }

    FakeChunkGroup& g_;
    const int rank_;
  };

  // Runs body(transport) on every rank, each on its own thread; rethrows the
  // first rank's exception after all have finished.
  void run(const std::function<void(Rank&)>& body) {
    std::vector<std::thread> threads;
    std::vector<std::exception_ptr> errors(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      threads.emplace_back([&, r] {
        Rank rank(*this, r);
        try {
          body(rank);
        } catch (...) {
          errors[static_cast<size_t>(r)] = std::current_exception();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (auto& e : errors) {
      if (e) std::rethrow_exception(e);
    }
  }

 private:
  const int size_;
  const int buffers_;
  const size_t buffer_bytes_;
  const size_t slice_bytes_;
  std::vector<std::byte> memory_;
  std::vector<std::array<std::atomic<uint64_t>, 3>> counters_;
};

}  // namespace tandem::testing
