#include "comm/shm/shm_waiter.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sched.h>

#include <algorithm>
#include <thread>

#include "comm/timeout_hints.h"
#include "tandem/core/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TANDEM_SHM_CPU_RELAX() _mm_pause()
#else
#define TANDEM_SHM_CPU_RELAX() ((void)0)
#endif

namespace tandem::comm::detail {

WaitPolicy wait_policy_for(int ranks) {
  // A peer that runs is usually only microseconds behind: spin 3 us. Past
  // that it has most likely lost its core (to another process, or to this
  // rank when the scheduler put both on one core), so yield: with nothing
  // else to run, sched_yield returns at once, so polling stays nearly as
  // quick as spinning. Only after 5 ms sleep, since waking from a sleep takes
  // far longer than a yield (docs/comm.md has the figures). With more ranks
  // than cores, yield at once.
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  if (static_cast<unsigned>(ranks) <= cores) {
    return WaitPolicy{std::chrono::microseconds(3), std::chrono::microseconds(5000)};
  }
  return WaitPolicy{std::chrono::microseconds(0), std::chrono::microseconds(5000)};
}

void ShmWaiter::cpu_relax() { TANDEM_SHM_CPU_RELAX(); }

void ShmWaiter::rest(Clock::duration waited, std::chrono::microseconds& sleep) const {
  if (waited < policy_.yield) {
    sched_yield();
    return;
  }
  sleep = std::clamp(sleep * 2, std::chrono::microseconds(50), std::chrono::microseconds(200));
  std::this_thread::sleep_for(sleep);
}

std::string ShmWaiter::describe_peer(int rank) const {
  std::string out = fmt::format("rank {} (pid {}", rank, segment_.pid(rank));
  if (ctx_.seq > 0) {
    uint64_t seq = segment_.control(rank).seq.load(std::memory_order_acquire);
    if (seq < ctx_.seq) {
      out += fmt::format("; it has not entered this collective, its last was #{}", seq);
    }
  }
  return out + ")";
}

bool ShmWaiter::find_failure(const std::vector<int>& pending, const WaitStage& stage,
                             bool expired) {
  const int me = segment_.rank();
  std::string where = fmt::format(": {}", stage.what);
  if (stage.chunk >= 0) where += fmt::format(" (chunk {} of {})", stage.chunk + 1, stage.chunks);
  if (auto abort = segment_.abort()) {
    failure_is_abort_ = true;
    failure_kind_ = abort->kind;
    failure_ = fmt::format(
        "rank {}: {}: gave up because {} did: {}", me, ctx_.description,
        abort->rank == me ? "another operation of this rank" : fmt::format("rank {}", abort->rank),
        abort->message);
    return true;
  }
  for (int r : pending) {
    if (segment_.alive(r)) continue;
    failure_kind_ = AbortKind::kPeer;
    failure_ = fmt::format(
        "rank {}: {}: peer rank {} (pid {}) died while this rank waited for it{}; this "
        "communicator is unusable: rebuild it (restart the job, or re-run init on the survivors)",
        me, ctx_.description, r, segment_.pid(r), where);
    return true;
  }
  if (!expired) return false;
  std::vector<std::string> who;
  for (int r : pending) who.push_back(describe_peer(r));
  failure_kind_ = AbortKind::kTimeout;
  failure_ =
      fmt::format("rank {}: {} timed out after {} waiting for {}{}; read those ranks' logs, or {}",
                  me, ctx_.description, format_duration(ctx_.deadline.elapsed()),
                  who.empty() ? std::string("its peers") : fmt::format("{}", fmt::join(who, ", ")),
                  where, tandem::detail::kCommTimeoutHint);
  return true;
}

void ShmWaiter::raise_failure() {
  // Tell the other ranks first, so that they stop waiting for this one.
  if (!failure_is_abort_) segment_.post_abort(failure_kind_, failure_);
  if (failure_kind_ == AbortKind::kPeer) throw PeerError(failure_);
  throw TimeoutError(failure_);
}

}  // namespace tandem::comm::detail
