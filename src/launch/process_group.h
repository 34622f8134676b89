// One attempt of a job on this node: the nproc_per_node workers started
// together (through ChildProcesses), watched together and stopped together.
// Output is relayed line by line (and copied raw to the rank's log file); the
// first worker that fails, or a signal to the launcher, stops all of them.
// Not thread-safe.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "launch/signal_relay.h"
#include "launch/worker_relays.h"
#include "tandem/core/deadline.h"
#include "tandem/launch/child_processes.h"
#include "tandem/launch/launch_options.h"
#include "tandem/launch/program.h"

namespace tandem::launch {

struct WorkerFailure {
  int rank = 0;
  pid_t pid = -1;
  std::string how;  // "exit code 3", "signal SIGSEGV"
};

struct AttemptOutcome {
  std::optional<WorkerFailure> failure;  // the first worker that failed
  int signal = 0;                        // the SIGINT/SIGTERM that stopped this attempt, or 0
};

class ProcessGroup {
 public:
  // `attempt` counts from 0 (it is TANDEM_RESTART_COUNT). The references
  // must outlive the group. The calling process must be a child subreaper
  // (launch::run makes it one), so that processes left in the workers'
  // groups are reaped here.
  ProcessGroup(const LaunchOptions& options, const LaunchOutput& output, const SignalRelay& signals,
               int attempt);
  // Bounded: ChildProcesses SIGKILLs and reaps what is left; then the log
  // files are closed.
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  // Opens the log files and starts every worker. Throws ProgramError or
  // tandem::Error; workers already started are then stopped by the
  // destructor.
  void start(const std::string& program_path, const std::vector<std::string>& base_env,
             int master_port);

  // Watches the workers until every process of their groups has exited and
  // been reaped, stopping them all after the first failure or a signal (see
  // launcher.h). Throws tandem::TimeoutError when processes survive SIGKILL
  // for 10 s.
  AttemptOutcome wait();

 private:
  void handle_signals(AttemptOutcome& outcome, int& signals_seen, Clock::time_point now);
  void check_failure(AttemptOutcome& outcome, Clock::time_point now);
  void stop(int sig, Clock::time_point now);
  void kill_survivors(Clock::time_point now);
  void say(const std::string& line) const;

  const LaunchOptions& options_;
  const LaunchOutput& output_;
  const SignalRelay& signals_;
  int attempt_;
  WorkerRelays relays_;      // in start order, as children_'s results
  ChildProcesses children_;  // after relays_: destroyed first, while its sink is valid
  std::optional<Clock::time_point> sigkill_at_;  // the grace period ends
  std::optional<Clock::time_point> give_up_at_;  // SIGKILL did not work
};

}  // namespace tandem::launch
