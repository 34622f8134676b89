// One attempt of a job on this node: the nproc_per_node workers started
// together, watched together and stopped together. Output is relayed line by
// line (and copied raw to the rank's log file); the first worker that fails,
// or a signal to the launcher, stops all of them. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "launch/output_prefixer.h"
#include "launch/signal_relay.h"
#include "tandem/core/deadline.h"
#include "tandem/launch/launcher.h"

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
  // must outlive the group.
  ProcessGroup(const LaunchOptions& options, const LaunchOutput& output, const SignalRelay& signals,
               int attempt);
  // Bounded: SIGKILLs every process still in the workers' groups and reaps
  // them for at most a few seconds, then closes every descriptor.
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
  struct Worker {
    int rank = 0;
    pid_t pid = -1;  // also its process group id
    int out_fd = -1;
    int err_fd = -1;
    int log_fd = -1;
    std::string log_path;
    OutputPrefixer out_lines{""};
    OutputPrefixer err_lines{""};
    bool exited = false;      // the worker itself has been reaped
    bool group_gone = false;  // nothing of its process group is left
    int wait_status = 0;
  };

  void open_log(Worker& w);
  void handle_signals(AttemptOutcome& outcome, int& signals_seen, Clock::time_point now);
  void check_failure(AttemptOutcome& outcome, Clock::time_point now);
  void drain_all();
  void pump_output(Millis timeout);
  bool read_stream(Worker& w, int& fd, bool is_err);
  void relay(Worker& w, std::string_view data, bool is_err);
  void end_stream(Worker& w, int& fd, bool is_err);
  void reap();
  void signal_all(int sig);
  void stop(int sig, Clock::time_point now);
  void kill_survivors(Clock::time_point now);
  bool all_exited() const;
  bool all_gone() const;
  const Worker* first_failed() const;
  void say(const std::string& line) const;
  std::string survivors() const;

  const LaunchOptions& options_;
  const LaunchOutput& output_;
  const SignalRelay& signals_;
  int attempt_;
  std::vector<Worker> workers_;
  std::optional<Clock::time_point> sigkill_at_;  // the grace period ends
  std::optional<Clock::time_point> give_up_at_;  // SIGKILL did not work
};

}  // namespace tandem::launch
