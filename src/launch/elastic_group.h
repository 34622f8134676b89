// One elastic job on this node (issue 15; launch/elastic_protocol.h has the
// protocol). Unlike ProcessGroup, a worker that fails does not stop the
// others: every worker exit is recorded in the job's store
// (elastic::record_exit), and a failed worker is replaced alone by one with a
// fresh worker id that joins the running job (TANDEM_ELASTIC_JOIN=1), up to
// --max-restarts times on this node, never after `complete` is set. On node 0
// the Coordinator runs in the same watch loop. The job ends when every worker
// of this node has exited (node 0 of a multi-node job also waits for the
// coordinator to finish, since it serves the store): 0 if `complete` is set,
// else 1. Evicted (stalled) workers are left alone while the job runs; once
// it is complete, the workers still running after the others exited get
// SIGTERM, then SIGKILL after the grace period.
// Not thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launch/signal_relay.h"
#include "launch/worker_relays.h"
#include "tandem/comm/store.h"
#include "tandem/core/deadline.h"
#include "tandem/launch/child_processes.h"
#include "tandem/launch/elastic_coordinator.h"
#include "tandem/launch/launch_options.h"
#include "tandem/launch/launcher.h"

namespace tandem::launch {

class ElasticGroup {
 public:
  // `store` is the job's store (served by this launcher on node 0, a client
  // elsewhere). The references must outlive the group, and the calling
  // process must be a child subreaper (see ProcessGroup).
  ElasticGroup(const LaunchOptions& options, const LaunchOutput& output, const SignalRelay& signals,
               std::shared_ptr<Store> store, int master_port);
  // Bounded: ChildProcesses SIGKILLs and reaps what is left.
  ~ElasticGroup();
  ElasticGroup(const ElasticGroup&) = delete;
  ElasticGroup& operator=(const ElasticGroup&) = delete;

  // Starts this node's initial workers (worker id = rank). Throws
  // ProgramError or tandem::Error.
  void start(const std::string& program_path, const std::vector<std::string>& base_env);

  // Watches, records and replaces workers until the job ends (see above).
  // Throws tandem::TimeoutError when processes survive SIGKILL for 10 s.
  LaunchResult wait();

 private:
  struct Worker {
    int rank = 0;  // its initial rank, kept by its replacements
    int local_rank = 0;
    int id = 0;
    bool ended = false;  // its exit has been handled
  };

  Millis next_poll_interval();
  void poll_coordinator();
  void read_job_state(Clock::time_point now);
  void handle_exits();
  void replace(const Worker& failed, const std::string& how);
  void end_game(Clock::time_point now);
  void handle_signals(Clock::time_point now);
  bool is_evicted(int id);
  // Runs a store call; a failing store stops this node's workers.
  template <typename F>
  bool guarded(const char* what, F&& call);
  void stop(int sig, Clock::time_point now);
  void say(const std::string& line) const;

  const LaunchOptions& options_;
  const LaunchOutput& output_;
  const SignalRelay& signals_;
  std::shared_ptr<Store> store_;
  int master_port_;
  std::unique_ptr<elastic::Coordinator> coordinator_;  // node 0 only
  int forming_turns_ = 0;  // turns since the coordinator began forming a generation
  std::string program_path_;
  std::vector<std::string> base_env_;
  int restarts_ = 0;  // replacements started on this node
  bool complete_ = false;
  std::optional<std::string> abort_reason_;
  std::optional<Clock::time_point> over_since_;  // complete or abort seen
  bool store_lost_ = false;
  int signal_ = 0;
  int signals_seen_ = 0;
  bool said_serving_ = false;
  std::vector<Worker> workers_;  // in start order, as children_'s results
  WorkerRelays relays_;
  ChildProcesses children_;  // last: destroyed first, while its sink is valid
  std::optional<Clock::time_point> sigkill_at_;
  std::optional<Clock::time_point> give_up_at_;
};

}  // namespace tandem::launch
