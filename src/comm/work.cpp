#include "tandem/comm/work.h"

#include <fmt/format.h>

#include "comm/timeout_hints.h"
#include "tandem/core/error.h"

namespace tandem {

void Work::wait(Millis timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!done_cv_.wait_for(lock, timeout, [this] { return done_; })) {
    throw TimeoutError(fmt::format(
        "{} timed out: not finished within Work::wait's timeout of {} (it is still running and "
        "will end by its own deadline); {}",
        description_, format_duration(timeout), detail::kCommTimeoutHint));
  }
  if (error_) std::rethrow_exception(error_);
}

bool Work::is_completed() {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

Clock::time_point Work::finished_at() {
  std::lock_guard<std::mutex> lock(mutex_);
  return finished_at_;
}

void Work::finish(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    error_ = std::move(error);
    finished_at_ = Clock::now();
  }
  done_cv_.notify_all();
}

}  // namespace tandem
