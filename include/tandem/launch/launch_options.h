// Options of `tandem-run` and the pure logic around them: turning the flag
// text into checked LaunchOptions, and the environment each worker gets (the
// variables torchrun sets, plus Tandem's own). Nothing here starts a process,
// so tests call these functions directly. Thread-safe: plain functions over
// value types.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::launch {

// The flags as the user typed them. Numbers stay text here so that
// make_launch_options() can reject "abc" or "-1" with a message naming the
// flag; an unset optional means "not given".
struct LaunchFlags {
  std::optional<std::string> nproc_per_node;
  std::optional<std::string> nnodes;  // "M", or torchrun's elastic "MIN:MAX"
  std::optional<std::string> node_rank;
  std::optional<std::string> master_addr;
  std::optional<std::string> master_port;
  std::optional<std::string> max_restarts;
  std::optional<std::string> log_dir;
  std::optional<std::string> grace_period;  // seconds, fractions allowed
  std::optional<std::string> min_workers;
  std::optional<std::string> max_workers;
  std::optional<std::string> heartbeat_timeout;  // seconds, fractions allowed
  bool no_prefix = false;
  // PROGRAM followed by its arguments (everything after `--`).
  std::vector<std::string> command;
};

struct LaunchOptions {
  // Workers started on this node. Default 1.
  int nproc_per_node = 1;
  // Nodes in the job; each runs its own tandem-run. Default 1. In an
  // elastic job (--nnodes MIN:MAX) the most nodes, MAX.
  int nnodes = 1;
  // The fewest nodes of an elastic job (--nnodes MIN:MAX); nnodes otherwise.
  int min_nnodes = 1;
  // This node's index in [0, nnodes). Default 0.
  int node_rank = 0;
  // Address of rank 0's node, where the workers' TCP store listens.
  std::string master_addr = "127.0.0.1";
  // Port of the store, which the node-0 launcher serves for the whole run.
  // Unset: the OS picks a free one (only allowed with nnodes == 1, since
  // other nodes could not guess it).
  std::optional<int> master_port;
  // How often the whole group is restarted after a worker fails. Default 0.
  // In an elastic job: how many failed workers of this node are replaced.
  int max_restarts = 0;
  // Elastic mode (issue 15): on when --min-workers/--max-workers is given or
  // --nnodes has MIN < MAX. A failed worker then does not stop the others;
  // it is replaced alone (up to max_restarts), and the coordinator in the
  // node-0 launcher keeps the members between min_workers and max_workers.
  bool elastic = false;
  // Quorum bounds, in workers. max_workers defaults to nnodes *
  // nproc_per_node, min_workers to min_nnodes * nproc_per_node.
  int min_workers = 1;
  int max_workers = 1;
  // An elastic member silent this long is stalled and evicted. Default 3 s;
  // shorter detects a stopped worker sooner, but a worker busy in a long
  // step without its heartbeat thread would be evicted.
  std::chrono::milliseconds heartbeat_timeout{3000};
  // When set, rank i's raw output is also written to <log_dir>/rank-<i>.log.
  std::optional<std::string> log_dir;
  // Prefix every output line with "[rank i] ". Default on.
  bool prefix_output = true;
  // How long workers get between SIGTERM (or a forwarded signal) and SIGKILL.
  // Default 5 s; longer lets workers write a checkpoint, shorter stops
  // faster.
  std::chrono::milliseconds grace_period{5000};
  // PROGRAM and its arguments; never empty after make_launch_options().
  std::vector<std::string> command;
  // "NAME=value" entries every worker gets on top of this process's
  // environment (before the rank variables, which win). Empty by default;
  // a program that re-launches itself passes what its ranks must share.
  std::vector<std::string> env;

  int world_size() const { return nnodes * nproc_per_node; }
};

// Parses and checks every flag. Throws tandem::InvalidArgument with one
// sentence naming the flag, the value given and the rule, ending with
// "see 'tandem-run --help'."
LaunchOptions make_launch_options(const LaunchFlags& flags);

// Checks options built in code (the same rules as make_launch_options).
// Throws tandem::InvalidArgument.
void validate(const LaunchOptions& options);

// `base` ("NAME=value" entries) with every entry of `set` added, replacing
// the entries of `base` that have the same names.
std::vector<std::string> environment_with(const std::vector<std::string>& base,
                                          const std::vector<std::string>& set);

// Who one worker is; the source of its environment variables.
struct WorkerIdentity {
  int local_rank = 0;
  int restart_count = 0;
  int master_port = 0;
  // Elastic jobs: the worker's id (TANDEM_WORKER_ID); unset means the
  // initial worker's, its rank. `joining` marks a replacement
  // (TANDEM_ELASTIC_JOIN=1).
  std::optional<int> worker_id;
  bool joining = false;
  // Whether the launcher serves the job's store (TANDEM_STORE_SERVED=1), so
  // that rank 0 only connects; tandem-run's groups set it, the benchmarks'
  // child ranks (where rank 0 serves) do not.
  bool store_served = false;
};

// The worker's environment: `base` ("NAME=value" entries, usually the
// launcher's own) with MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, TANDEM_NODE_RANK,
// TANDEM_RESTART_COUNT, TORCHELASTIC_RESTART_COUNT and, with
// worker.store_served, TANDEM_STORE_SERVED=1 set (replacing any inherited
// value; without store_served an inherited TANDEM_STORE_SERVED is dropped);
// in an elastic job also TANDEM_ELASTIC,
// TANDEM_WORKER_ID, TANDEM_HEARTBEAT_TIMEOUT and, for a replacement,
// TANDEM_ELASTIC_JOIN=1 (launch/elastic_protocol.h); then with_worker_defaults().
std::vector<std::string> worker_environment(const std::vector<std::string>& base,
                                            const LaunchOptions& options,
                                            const WorkerIdentity& worker);

// `env` ("NAME=value" entries) with what every worker runs with unless its
// environment says otherwise: OMP_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=1, so that N
// workers do not each start one thread per core; and
// GLIBC_TUNABLES=glibc.malloc.hugetlb=1, so that malloc asks for transparent
// huge pages: memory a worker touches for the first time (its first steps,
// or an elastic survivor's larger share of the global batch) then faults in
// 2 MiB at a time instead of 4 KiB. Any GLIBC_TUNABLES already set, even
// empty, is kept instead. The lab profiles with the same.
std::vector<std::string> with_worker_defaults(std::vector<std::string> env);

// Where output goes. Every call carries whole lines (except a last line cut
// at exit, which gets a newline added), so lines of different ranks never
// mix. All three must be set.
struct LaunchOutput {
  std::function<void(std::string_view)> out;     // the workers' stdout
  std::function<void(std::string_view)> err;     // the workers' stderr
  std::function<void(std::string_view)> status;  // tandem-run's own lines
};

}  // namespace tandem::launch
