// Bounded waiting on flags in the shared segment. A wait spins briefly, then
// yields, then sleeps with a growing interval (barely spinning when the ranks
// outnumber the cores, so that a waiting rank never starves the one it waits
// for). Every few milliseconds, and at the deadline, it looks at the ranks it
// still waits for: a posted abort, a dead process or the deadline ends the
// wait with PeerError or TimeoutError naming them, and posts an abort so the
// other ranks stop waiting too.
// Thread-compatible: one waiter per operation.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "comm/algorithms/chunk_plan.h"
#include "comm/shm/shm_segment.h"
#include "tandem/comm/communicator.h"

namespace tandem::comm::detail {

// How long a wait spins before it yields, and yields before it sleeps.
struct WaitPolicy {
  std::chrono::microseconds spin{3};
  std::chrono::microseconds yield{5000};
};
// The policy for `ranks` processes on this host's cores.
WaitPolicy wait_policy_for(int ranks);

// What a wait is for, for messages (the chunked algorithms' type).
using ::tandem::detail::WaitStage;

class ShmWaiter {
 public:
  ShmWaiter(const ShmSegment& segment, const OpContext& ctx, WaitPolicy policy)
      : segment_(segment), ctx_(ctx), policy_(policy) {}

  // Returns once ready() is true. pending() lists the ranks that ready()
  // still waits for; it is called only on the slow path. Throws PeerError
  // (an abort was posted, or a pending rank died) or TimeoutError (the
  // operation's deadline passed).
  template <typename Ready, typename Pending>
  void wait(Ready&& ready, Pending&& pending, const WaitStage& stage) {
    if (ready()) return;
    const Clock::time_point start = Clock::now();
    Clock::time_point now = start;
    Clock::time_point next_check = start + kCheckPeriod;
    std::chrono::microseconds sleep{0};
    for (int turn = 1;; ++turn) {
      if (now - start < policy_.spin) {
        cpu_relax();
        if (ready()) return;
        if (turn % 32 != 0) continue;  // read the clock about once a microsecond
      } else {
        rest(now - start, sleep);
        if (ready()) return;
      }
      now = Clock::now();
      const bool expired = now >= ctx_.deadline.at();
      if (now < next_check && !expired) continue;
      next_check = now + kCheckPeriod;
      if (!find_failure(pending(), stage, expired)) continue;
      if (ready()) return;  // it arrived while we looked
      raise_failure();
    }
  }

 private:
  static constexpr std::chrono::milliseconds kCheckPeriod{5};

  static void cpu_relax();
  // Yields (within policy_.yield of the start) or sleeps 50 us, 100 us, ... 1 ms.
  void rest(Clock::duration waited, std::chrono::microseconds& sleep) const;
  // Records the failure (if any) that ends this wait; true if there is one.
  bool find_failure(const std::vector<int>& pending, const WaitStage& stage, bool expired);
  [[noreturn]] void raise_failure();
  std::string describe_peer(int rank) const;

  const ShmSegment& segment_;
  const OpContext& ctx_;
  const WaitPolicy policy_;
  AbortKind failure_kind_ = AbortKind::kTimeout;
  bool failure_is_abort_ = false;
  std::string failure_;
};

}  // namespace tandem::comm::detail
