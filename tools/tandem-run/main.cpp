// `tandem-run`: starts the workers of a distributed job, like torchrun. This
// file only parses flags, calls tandem::launch::run and maps errors to exit
// codes: 2 for usage errors, 126/127 when PROGRAM cannot be executed, 1 for
// other failures; otherwise the job's own code (see launcher.h).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tandem/core/error.h"
#include "tandem/launch/launcher.h"

namespace {

constexpr const char* kFooter =
    R"(Each worker gets MASTER_ADDR, MASTER_PORT, RANK (= node-rank * nproc-per-node
+ LOCAL_RANK), WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
TANDEM_NODE_RANK, TANDEM_RESTART_COUNT, TORCHELASTIC_RESTART_COUNT and
TANDEM_STORE_SERVED=1, and OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1 and
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (malloc on transparent huge pages)
unless they are already set.

The store: tandem-run on --node-rank 0 serves the job's TCP store at
MASTER_ADDR:MASTER_PORT for the whole run, before any worker starts, so it
outlives every worker (rank 0 included) and every restart; workers only
connect. Without --master-port the OS picks a free port.

Output: every line of a worker's stdout/stderr is prefixed "[rank i] " (unless
--no-prefix). With --log-dir, rank i's raw output also goes to
DIR/rank-<i>.log; the first attempt truncates it, each restart appends after a
"---- tandem-run: restart ... ----" line.

If a worker fails (non-zero exit or a signal), the others get SIGTERM, then
SIGKILL after the grace period; --max-restarts K then starts the group again,
up to K times, with TANDEM_RESTART_COUNT counting up (same store, same port).
SIGINT/SIGTERM to tandem-run are forwarded to all
workers (a second one sends SIGKILL at once) and are never followed by a
restart. Workers run in their own process groups; processes a worker leaves
behind are stopped when the job ends. Workers die with tandem-run even if it is
SIGKILLed (PR_SET_PDEATHSIG).

Elastic mode (--min-workers/--max-workers, or --nnodes MIN:MAX with MIN < MAX):
a failed worker does not stop the others. Every worker exit is recorded in the
store, and the coordinator in the node-0 launcher decides each generation's
members (at least --min-workers, at most --max-workers). A failed worker is
replaced alone, by a worker with a fresh TANDEM_WORKER_ID and
TANDEM_ELASTIC_JOIN=1 (same RANK, WORLD_SIZE = --max-workers); --max-restarts
then counts replacements per node. A worker without a heartbeat for
--heartbeat-timeout is evicted and left alone until the job ends. Workers also
get TANDEM_ELASTIC=MIN:MAX, TANDEM_WORKER_ID and TANDEM_HEARTBEAT_TIMEOUT. The
job ends when every worker of the node has exited: 0 if training completed
(`complete` in the store), else 1.

Exit codes: 0 all workers succeeded; 1 a worker failed (no restart left) or
the launch failed; 2 bad flags; 126 PROGRAM is not executable; 127 PROGRAM
not found; 130/143 stopped by SIGINT/SIGTERM.)";

// Writes all of `data` to `fd`; output that cannot be written (a closed
// pipe) is dropped so the job keeps running.
void write_fd(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<size_t>(n));
  }
}

class UsageFormatter : public CLI::Formatter {
 public:
  std::string make_usage(const CLI::App*, std::string) const override {
    return "Usage: tandem-run [--nproc-per-node N] [--nnodes M --node-rank R --master-addr A\n"
           "                  --master-port P] [--max-restarts K] [--log-dir DIR] [--no-prefix]\n"
           "                  [--min-workers N] [--max-workers N] [--heartbeat-timeout SECONDS]\n"
           "                  [--grace-period SECONDS] -- PROGRAM ARGS...\n";
  }
};

int usage_error(const std::string& message) {
  std::cerr << "tandem-run: error: " << message << std::endl;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tandem-run: start the workers of a distributed Tandem (or PyTorch) job",
               "tandem-run"};
  app.formatter(std::make_shared<UsageFormatter>());
  app.footer(kFooter);
  app.prefix_command();
  tandem::launch::LaunchFlags flags;
  app.add_option("--nproc-per-node", flags.nproc_per_node, "workers on this node (default 1)")
      ->type_name("N");
  app.add_option("--nnodes", flags.nnodes,
                 "nodes in the job (default 1); MIN:MAX makes the job elastic (torchrun's form)")
      ->type_name("M|MIN:MAX");
  app.add_option("--node-rank", flags.node_rank, "this node's index in [0, M) (default 0)")
      ->type_name("R");
  app.add_option("--master-addr", flags.master_addr, "address of node 0 (default 127.0.0.1)")
      ->type_name("A");
  app.add_option("--master-port", flags.master_port,
                 "port of the store that tandem-run serves on node 0; required when M > 1, "
                 "otherwise the OS picks a free one")
      ->type_name("P");
  app.add_option("--max-restarts", flags.max_restarts,
                 "restart the whole group up to K times after a worker fails (default 0); in "
                 "elastic mode, replace up to K failed workers of this node")
      ->type_name("K");
  app.add_option("--log-dir", flags.log_dir, "also write rank i's output to DIR/rank-<i>.log")
      ->type_name("DIR");
  app.add_flag("--no-prefix", flags.no_prefix, "do not prefix output lines with \"[rank i] \"");
  app.add_option("--grace-period", flags.grace_period,
                 "seconds between SIGTERM and SIGKILL when stopping workers (default 5)")
      ->type_name("SECONDS");
  app.add_option("--min-workers", flags.min_workers,
                 "elastic: the fewest workers the job continues with (default: MIN nodes * N, "
                 "or --max-workers)")
      ->type_name("N");
  app.add_option("--max-workers", flags.max_workers,
                 "elastic: the most workers in one generation (default M * N)")
      ->type_name("N");
  app.add_option("--heartbeat-timeout", flags.heartbeat_timeout,
                 "elastic: a worker silent this long is stalled and evicted (default 3)")
      ->type_name("SECONDS");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    return usage_error(std::string(e.what()) + "; see 'tandem-run --help'.");
  }
  // With prefix_command, everything from "--" or from PROGRAM on lands in
  // remaining(); an unknown flag before PROGRAM lands there too.
  std::vector<std::string> rest = app.remaining();
  if (!rest.empty() && rest.front() == "--") {
    rest.erase(rest.begin());
  } else if (!rest.empty() && rest.front().starts_with("-")) {
    return usage_error("unknown flag '" + rest.front() + "'; see 'tandem-run --help'.");
  }
  flags.command = rest;

  tandem::launch::LaunchOutput output{
      .out = [](std::string_view s) { write_fd(STDOUT_FILENO, s); },
      .err = [](std::string_view s) { write_fd(STDERR_FILENO, s); },
      .status = [](std::string_view s) { write_fd(STDERR_FILENO, s); },
  };
  try {
    tandem::launch::LaunchOptions options = tandem::launch::make_launch_options(flags);
    return tandem::launch::run(options, output).exit_code;
  } catch (const tandem::launch::ProgramError& e) {
    std::cerr << "tandem-run: error: " << e.what() << std::endl;
    return e.exit_code();
  } catch (const tandem::InvalidArgument& e) {
    return usage_error(e.what());
  } catch (const std::exception& e) {
    std::cerr << "tandem-run: error: " << e.what() << std::endl;
    return 1;
  }
}
