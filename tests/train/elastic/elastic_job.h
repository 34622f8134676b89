// Test helper for elastic training: runs `tandem-run ... -- tandem train
// ...` as a child (bounded by a deadline, SIGKILLed past it), finds a
// worker's pid by its TANDEM_WORKER_ID, waits until a worker's metrics file
// reaches a step, and reads a run's final parameters from its checkpoint
// directory (a whole-model file, or a sharded one gathered to one rank).
#pragma once

#include <ATen/core/Tensor.h>
#include <sys/types.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lab/netns_hosts.h"
#include "tandem/launch/child_processes.h"

namespace tandem::testing {

inline std::string tandem_cli_path() { return TANDEM_BINARY_DIR "/tools/tandem"; }
inline std::string tandem_run_binary() { return TANDEM_BINARY_DIR "/tools/tandem-run"; }

struct ElasticJobResult {
  int exit_code = -1;  // -1: killed by a signal or at the deadline
  std::string output;  // stdout and stderr, interleaved
};

class ElasticJob {
 public:
  // Starts `tandem-run launcher_args... -- tandem train train_args...`,
  // behind `wrapper` when one is given (a program that execs the rest of
  // its argv in the same process, as `ip netns exec NS` does).
  ElasticJob(const std::vector<std::string>& launcher_args,
             const std::vector<std::string>& train_args,
             const std::vector<std::string>& extra_env = {},
             const std::vector<std::string>& wrapper = {});
  pid_t launcher_pid() const;
  // The pid of the running worker with TANDEM_WORKER_ID=`worker_id`, or
  // nullopt when there is none.
  std::optional<pid_t> worker_pid(int worker_id) const;
  // Polls (and relays the job's output) until `path` holds a metrics line
  // with "step" >= `step`; false when `timeout` passes or the job ends first.
  bool wait_for_step(const std::string& path, int64_t step, std::chrono::milliseconds timeout);
  // Relays the job's output for up to `timeout`.
  void poll(std::chrono::milliseconds timeout) { process_.poll(timeout); }
  // Collects output until the job exits, or SIGKILLs it after `timeout`.
  ElasticJobResult wait(std::chrono::milliseconds timeout);

 private:
  launch::ChildProcesses process_;
};

// The JSON lines of a metrics file (unparseable lines are skipped).
std::vector<nlohmann::json> read_metrics(const std::string& path);

// The final parameters (and optimizer state tensors, named "opt/...") of the
// checkpoint DIR/latest names, as full tensors by name.
std::map<std::string, at::Tensor> final_state(const std::string& checkpoint_dir);

// Entries of /dev/shm whose names start with "tandem".
std::vector<std::string> tandem_shm_segments();

// Two "hosts" on this machine: network namespaces joined by a veth pair,
// unshaped (lab/netns_hosts.h); both are deleted, and whatever runs in them
// killed, on destruction. Needs root and iproute2.
class TwoHosts : public lab::NetnsHosts {
 public:
  TwoHosts() : lab::NetnsHosts("") {}
};

}  // namespace tandem::testing
