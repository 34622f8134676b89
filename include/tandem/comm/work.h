// A handle to an asynchronous communication operation, returned by the
// Communicator's *_async calls. Operations of one communicator run in the
// order they were issued, on one background thread per communicator.
// Thread-safe: wait() and is_completed() may be called from any thread.
#pragma once

#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>

#include "tandem/core/deadline.h"

namespace tandem {

class Work {
 public:
  explicit Work(std::string description) : description_(std::move(description)) {}
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;

  // Blocks until the operation has finished or `timeout` passes. Rethrows the
  // operation's own error (TimeoutError, PeerError, ...). Throws TimeoutError
  // naming the operation if it is still running after `timeout`; the operation
  // itself stays bounded by its own deadline.
  void wait(Millis timeout);

  // True once the operation finished, successfully or not. Never blocks.
  bool is_completed();

  // "all_reduce #12 (4.0 MiB, float32)": for messages.
  const std::string& description() const { return description_; }

  // Called by the executor when the operation ends (error null on success).
  void finish(std::exception_ptr error);

  // When finish() ran (a default time point until then); for traces.
  Clock::time_point finished_at();

 private:
  const std::string description_;
  std::mutex mutex_;
  std::condition_variable done_cv_;  // guarded by mutex_
  bool done_ = false;                // guarded by mutex_
  std::exception_ptr error_;         // guarded by mutex_
  Clock::time_point finished_at_;    // guarded by mutex_
};

}  // namespace tandem
