#include "tandem/launch/launcher.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <fmt/format.h>

#include <filesystem>
#include <memory>

#include "launch/elastic_group.h"
#include "launch/process_group.h"
#include "launch/signal_relay.h"
#include "tandem/comm/store.h"
#include "tandem/core/check.h"
#include "tandem/core/env.h"
#include "tandem/core/error.h"

namespace tandem::launch {
namespace {

// Makes this process the reaper of its orphaned descendants while it lives,
// so that processes a worker started can be reaped after the worker dies
// instead of lingering as zombies of a PID 1 that may never reap them.
class SubreaperScope {
 public:
  SubreaperScope() {
#ifdef __linux__
    prctl(PR_SET_CHILD_SUBREAPER, 1);
#endif
  }
  ~SubreaperScope() {
#ifdef __linux__
    prctl(PR_SET_CHILD_SUBREAPER, 0);
#endif
  }
  SubreaperScope(const SubreaperScope&) = delete;
  SubreaperScope& operator=(const SubreaperScope&) = delete;
};

void make_log_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) {
    throw Error(fmt::format("cannot create --log-dir '{}': {}", dir,
                            ec ? ec.message() : "a file of that name is in the way"));
  }
}

// Note [The launcher's store]: the job's TCP store lives in the node-0
// launcher for the whole run, so that it outlives any worker (rank 0
// included) and every restart reuses it; workers see TANDEM_STORE_SERVED=1
// and only connect (the worker side prefixes its rendezvous keys with
// TANDEM_RESTART_COUNT). Serving on port 0 lets the OS pick a free port
// without a race when --master-port is unset.
constexpr Millis kStoreTimeout{120'000};

struct JobStore {
  std::shared_ptr<Store> store;  // null on the other nodes of a non-elastic job
  int port = 0;
};

JobStore open_store(const LaunchOptions& o) {
  if (o.node_rank == 0) {
    auto store = make_tcp_store(o.master_addr, o.master_port.value_or(0), true, kStoreTimeout);
    return {store, tcp_store_port(*store)};
  }
  if (!o.elastic) return {nullptr, *o.master_port};
  return {make_tcp_store(o.master_addr, *o.master_port, false, kStoreTimeout), *o.master_port};
}

LaunchResult run_elastic(const LaunchOptions& options, const LaunchOutput& output,
                         const SignalRelay& signals, const JobStore& job,
                         const std::string& program, const std::vector<std::string>& base_env) {
  ElasticGroup group(options, output, signals, job.store, job.port);
  group.start(program, base_env);
  return group.wait();
}

}  // namespace

LaunchResult run(const LaunchOptions& options, const LaunchOutput& output) {
  validate(options);
  TANDEM_ASSERT(output.out && output.err && output.status, "LaunchOutput has an unset sink");
  const std::string program =
      resolve_program(options.command.front(), env::get(env::process_lookup(), "PATH"));
  if (options.log_dir) make_log_dir(*options.log_dir);
  const std::vector<std::string> base_env = environment_with(current_environment(), options.env);
  SignalRelay signals;
  SubreaperScope subreaper;
  const JobStore job = open_store(options);
  if (options.elastic) return run_elastic(options, output, signals, job, program, base_env);
  const int attempts = options.max_restarts + 1;
  for (int attempt = 1;; ++attempt) {
    AttemptOutcome outcome;
    {
      ProcessGroup group(options, output, signals, attempt - 1);
      group.start(program, base_env, job.port);
      outcome = group.wait();
    }
    if (outcome.signal != 0) return {128 + outcome.signal, attempt, outcome.signal};
    if (!outcome.failure) return {0, attempt, 0};
    if (signals.count() > 0) return {128 + signals.first(), attempt, signals.first()};
    const WorkerFailure& f = *outcome.failure;
    if (attempt >= attempts) {
      if (options.max_restarts > 0) {
        output.status(
            fmt::format("tandem-run: rank {} failed ({}) and no restart is left "
                        "(--max-restarts {}); giving up\n",
                        f.rank, f.how, options.max_restarts));
      }
      return {1, attempt, 0};
    }
    output.status(
        fmt::format("tandem-run: rank {} failed ({}); restarting the group (attempt {} "
                    "of {})\n",
                    f.rank, f.how, attempt + 1, attempts));
  }
}

}  // namespace tandem::launch
