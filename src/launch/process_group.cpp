#include "launch/process_group.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "tandem/core/error.h"

namespace tandem::launch {
namespace {

// How long one turn of the watch loop waits for output; it bounds how late
// an exit or a signal is noticed when no pipe wakes the loop.
constexpr Millis kPollInterval{50};
constexpr Millis kAfterKill = ChildProcesses::kAfterKill;
// The output tail ChildProcesses keeps per worker (the launcher relays all).
constexpr size_t kKeptOutputBytes = 64 * 1024;

}  // namespace

ProcessGroup::ProcessGroup(const LaunchOptions& options, const LaunchOutput& output,
                           const SignalRelay& signals, int attempt)
    : options_(options),
      output_(output),
      signals_(signals),
      attempt_(attempt),
      relays_(options, output),
      children_(
          {.on_data = [this](size_t i, Stream s, std::string_view d) { relays_.relay(i, s, d); },
           .on_closed = [this](size_t i, Stream s) { relays_.end_stream(i, s); },
           .keep_output_bytes = kKeptOutputBytes,
           .reap_groups = true}) {}

ProcessGroup::~ProcessGroup() = default;

// The first attempt truncates each rank's log; each restart appends to it
// after a separator line (WorkerRelays).
void ProcessGroup::start(const std::string& program_path, const std::vector<std::string>& base_env,
                         int master_port) {
  const int n = options_.nproc_per_node;
  const std::string separator =
      attempt_ == 0
          ? ""
          : fmt::format("---- tandem-run: restart {} of {} (TANDEM_RESTART_COUNT={}) ----",
                        attempt_, options_.max_restarts, attempt_);
  for (int local_rank = 0; local_rank < n; ++local_rank) {
    const int rank = options_.node_rank * n + local_rank;
    relays_.add(rank, separator);
    children_.start_program(rank, program_path, options_.command,
                            worker_environment(base_env, options_,
                                               {.local_rank = local_rank,
                                                .restart_count = attempt_,
                                                .master_port = master_port,
                                                .worker_id = std::nullopt,
                                                .joining = false,
                                                .store_served = true}));
  }
}

AttemptOutcome ProcessGroup::wait() {
  AttemptOutcome outcome;
  int signals_seen = 0;
  while (true) {
    children_.poll(kPollInterval);
    const auto now = Clock::now();
    handle_signals(outcome, signals_seen, now);
    if (!outcome.failure && outcome.signal == 0) check_failure(outcome, now);
    if (children_.all_exited() && !children_.all_gone() && !sigkill_at_) {
      say(fmt::format("tandem-run: every worker has exited, but {} still running; stopping them",
                      children_.survivors()));
      stop(SIGTERM, now);
    }
    if (children_.all_gone()) break;
    if (sigkill_at_ && !give_up_at_ && now >= *sigkill_at_) kill_survivors(now);
    if (give_up_at_ && now >= *give_up_at_) children_.give_up_on_survivors();
  }
  children_.drain();
  return outcome;
}

// The first SIGINT/SIGTERM is forwarded to every worker's group; a second
// one means "now": SIGKILL without waiting for the grace period.
void ProcessGroup::handle_signals(AttemptOutcome& outcome, int& signals_seen,
                                  Clock::time_point now) {
  const int received = signals_.count();
  if (received == signals_seen) return;
  if (signals_seen == 0) {
    outcome.signal = signals_.first();
    say(fmt::format("tandem-run: received {}; forwarding it to the workers (SIGKILL after {})",
                    signal_name(outcome.signal), format_duration(options_.grace_period)));
    stop(outcome.signal, now);
  } else if (!give_up_at_) {
    say("tandem-run: received another signal; sending SIGKILL to the workers now");
    children_.signal_all(SIGKILL);
    give_up_at_ = now + kAfterKill;
  }
  signals_seen = received;
}

void ProcessGroup::check_failure(AttemptOutcome& outcome, Clock::time_point now) {
  const ChildResult* w = children_.first_failed();
  if (w == nullptr) return;
  outcome.failure = WorkerFailure{w->rank, w->pid, w->how()};
  const int others = options_.nproc_per_node - 1;
  say(fmt::format(
      "tandem-run: rank {} (pid {}) failed ({}){}", w->rank, w->pid, outcome.failure->how,
      others > 0 ? fmt::format("; stopping the other {} worker{}", others, others == 1 ? "" : "s")
                 : ""));
  stop(SIGTERM, now);
}

void ProcessGroup::stop(int sig, Clock::time_point now) {
  children_.signal_all(sig);
  if (!sigkill_at_) sigkill_at_ = now + options_.grace_period;
}

void ProcessGroup::kill_survivors(Clock::time_point now) {
  say(fmt::format("tandem-run: {} still running {} after {}; sending SIGKILL",
                  children_.survivors(), format_duration(options_.grace_period),
                  signals_.first() != 0 ? signal_name(signals_.first()) : "SIGTERM"));
  children_.signal_all(SIGKILL);
  give_up_at_ = now + kAfterKill;
}

void ProcessGroup::say(const std::string& line) const { output_.status(line + "\n"); }

}  // namespace tandem::launch
