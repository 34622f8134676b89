// ProgressBoard: each rank of a group posts, to the group's store, how far it
// got (the last collective it entered) and a heartbeat, from a background
// thread about twice a second. When an operation times out or a link breaks,
// describe_peers() reads the board and names the ranks that have not reached
// the operation, and those not heard from lately (likely dead). This is how a
// Gloo or hierarchical communicator's errors name the missing ranks.
// Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "tandem/comm/store.h"

namespace tandem::detail {

class ProgressBoard {
 public:
  ProgressBoard(std::shared_ptr<Store> store, int rank, int size);
  ~ProgressBoard();
  ProgressBoard(const ProgressBoard&) = delete;
  ProgressBoard& operator=(const ProgressBoard&) = delete;

  // Records that this rank entered collective `seq` (cheap: an atomic store).
  void enter(uint64_t seq) { seq_.store(seq, std::memory_order_relaxed); }

  // "rank 2 has not reached it (last entered collective #11, heard 0.4 s ago);
  // rank 3 has not been heard from for 7.2 s (dead or stopped?)". Reads the
  // store with short timeouts; never throws (returns what it could learn).
  std::string describe_peers(uint64_t seq);

 private:
  void loop();
  void post();

  std::shared_ptr<Store> store_;
  const int rank_;
  const int size_;
  std::atomic<uint64_t> seq_{0};
  std::mutex mutex_;
  std::condition_variable stop_cv_;  // guarded by mutex_
  bool stop_ = false;                // guarded by mutex_
  std::thread thread_;
};

}  // namespace tandem::detail
