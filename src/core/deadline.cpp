#include "tandem/core/deadline.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

#include "tandem/core/check.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TANDEM_CPU_RELAX() _mm_pause()
#else
#define TANDEM_CPU_RELAX() ((void)0)
#endif

namespace tandem {

Deadline::Deadline(Millis timeout, std::string_view what)
    : start_(Clock::now()), timeout_(timeout) {
  TANDEM_CHECK(timeout.count() > 0, "{} must be positive (got {} ms); there is no 'wait forever'",
               what, timeout.count());
  at_ = start_ + timeout;
}

Millis Deadline::elapsed() const {
  return std::chrono::duration_cast<Millis>(Clock::now() - start_);
}

Millis Deadline::remaining() const {
  auto left = std::chrono::duration_cast<Millis>(at_ - Clock::now());
  return std::max(left, Millis(0));
}

Backoff::Backoff(int spins, std::chrono::microseconds max_sleep)
    : spins_(spins), max_sleep_(max_sleep) {}

void Backoff::pause() {
  ++turns_;
  if (turns_ <= spins_) {
    TANDEM_CPU_RELAX();
    return;
  }
  if (turns_ <= spins_ + 64) {
    std::this_thread::yield();
    return;
  }
  // Sleep 1, 2, 4, ... microseconds up to the cap.
  int shift = std::min(turns_ - spins_ - 64, 20);
  auto sleep = std::min(std::chrono::microseconds(1LL << shift), max_sleep_);
  std::this_thread::sleep_for(sleep);
}

std::string format_duration(Millis d) {
  if (d.count() < 1000) return fmt::format("{} ms", d.count());
  return fmt::format("{:.1f} s", static_cast<double>(d.count()) / 1000.0);
}

}  // namespace tandem
