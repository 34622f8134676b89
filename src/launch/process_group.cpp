#include "launch/process_group.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "launch/worker_process.h"
#include "tandem/core/error.h"
#include "tandem/core/log.h"

namespace tandem::launch {
namespace {

// How long one turn of the watch loop waits for output; it bounds how late
// an exit or a signal is noticed when no pipe wakes the loop.
constexpr Millis kPollInterval{50};
// A process that outlives SIGKILL this long is stuck in the kernel.
constexpr Millis kAfterKill{10'000};
constexpr size_t kReadBytes = 64 * 1024;
// Reads per stream and turn, so one chatty worker cannot starve the others.
constexpr int kReadsPerTurn = 16;

enum class ReadState { kOpen, kDrained, kClosed };

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

ReadState read_some(int fd, std::string& buffer) {
  buffer.resize(kReadBytes);
  while (true) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n > 0) {
      buffer.resize(static_cast<size_t>(n));
      return ReadState::kOpen;
    }
    buffer.clear();
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return ReadState::kDrained;
    return ReadState::kClosed;  // end of file, or an error that ends the stream
  }
}

}  // namespace

ProcessGroup::ProcessGroup(const LaunchOptions& options, const LaunchOutput& output,
                           const SignalRelay& signals, int attempt)
    : options_(options), output_(output), signals_(signals), attempt_(attempt) {}

ProcessGroup::~ProcessGroup() {
  if (!all_gone()) {
    signal_all(SIGKILL);
    Deadline deadline(Millis(3000), "reap timeout");
    while (!deadline.expired()) {
      reap();
      if (all_gone()) break;
      std::this_thread::sleep_for(Millis(1));
    }
    if (!all_gone()) log::warn("tandem-run: could not reap {} after SIGKILL", survivors());
  }
  for (auto& w : workers_) {
    for (int* fd : {&w.out_fd, &w.err_fd, &w.log_fd}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  }
}

void ProcessGroup::start(const std::string& program_path, const std::vector<std::string>& base_env,
                         int master_port) {
  const int n = options_.nproc_per_node;
  workers_.reserve(static_cast<size_t>(n));
  for (int local_rank = 0; local_rank < n; ++local_rank) {
    Worker& w = workers_.emplace_back();
    w.rank = options_.node_rank * n + local_rank;
    std::string prefix = options_.prefix_output ? fmt::format("[rank {}] ", w.rank) : "";
    w.out_lines = OutputPrefixer(prefix);
    w.err_lines = OutputPrefixer(prefix);
    if (options_.log_dir) open_log(w);
    SpawnRequest request{
        program_path, options_.command,
        worker_environment(
            base_env, options_,
            {.local_rank = local_rank, .restart_count = attempt_, .master_port = master_port})};
    SpawnedWorker spawned = spawn_worker(request);
    w.pid = spawned.pid;
    w.out_fd = spawned.out_fd;
    w.err_fd = spawned.err_fd;
    log::debug("tandem-run: started rank {} as pid {}", w.rank, w.pid);
  }
}

// The first attempt truncates <log_dir>/rank-<i>.log; each
// restart appends to it after a separator line, so one file holds a rank's
// whole history in order.
void ProcessGroup::open_log(Worker& w) {
  w.log_path = fmt::format("{}/rank-{}.log", *options_.log_dir, w.rank);
  int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (attempt_ == 0 ? O_TRUNC : 0);
  w.log_fd = ::open(w.log_path.c_str(), flags, 0644);
  if (w.log_fd < 0) {
    throw Error(
        fmt::format("cannot open log file '{}': {}; check --log-dir", w.log_path, strerror(errno)));
  }
  if (attempt_ > 0) {
    write_all(w.log_fd, fmt::format("---- tandem-run: restart {} of {} (TANDEM_RESTART_COUNT={}) "
                                    "----\n",
                                    attempt_, options_.max_restarts, attempt_));
  }
}

AttemptOutcome ProcessGroup::wait() {
  AttemptOutcome outcome;
  int signals_seen = 0;
  while (true) {
    pump_output(kPollInterval);
    reap();
    const auto now = Clock::now();
    handle_signals(outcome, signals_seen, now);
    if (!outcome.failure && outcome.signal == 0) check_failure(outcome, now);
    if (all_exited() && !all_gone() && !sigkill_at_) {
      say(fmt::format("tandem-run: every worker has exited, but {} still running; stopping them",
                      survivors()));
      stop(SIGTERM, now);
    }
    if (all_gone()) break;
    if (sigkill_at_ && !give_up_at_ && now >= *sigkill_at_) kill_survivors(now);
    if (give_up_at_ && now >= *give_up_at_) {
      throw TimeoutError(fmt::format(
          "{} did not exit {} after SIGKILL (stuck in the kernel, e.g. on a hung file system); "
          "giving up on them; inspect them with 'ps -o pid,stat,wchan -g PGID'",
          survivors(), format_duration(kAfterKill)));
    }
  }
  drain_all();
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
    signal_all(SIGKILL);
    give_up_at_ = now + kAfterKill;
  }
  signals_seen = received;
}

void ProcessGroup::check_failure(AttemptOutcome& outcome, Clock::time_point now) {
  const Worker* w = first_failed();
  if (w == nullptr) return;
  outcome.failure = WorkerFailure{w->rank, w->pid, describe_wait_status(w->wait_status)};
  const int others = options_.nproc_per_node - 1;
  say(fmt::format(
      "tandem-run: rank {} (pid {}) failed ({}){}", w->rank, w->pid, outcome.failure->how,
      others > 0 ? fmt::format("; stopping the other {} worker{}", others, others == 1 ? "" : "s")
                 : ""));
  stop(SIGTERM, now);
}

// Every process that could write to the pipes is gone: read what is left
// and flush unfinished lines.
void ProcessGroup::drain_all() {
  for (auto& w : workers_) {
    for (bool is_err : {false, true}) {
      int& fd = is_err ? w.err_fd : w.out_fd;
      while (fd >= 0 && read_stream(w, fd, is_err)) {
      }
      if (fd >= 0) end_stream(w, fd, is_err);
    }
  }
}

void ProcessGroup::pump_output(Millis timeout) {
  std::vector<pollfd> fds;
  std::vector<std::pair<Worker*, bool>> owners;  // (worker, is_err) for each entry of fds
  for (auto& w : workers_) {
    if (w.out_fd >= 0) {
      fds.push_back({w.out_fd, POLLIN, 0});
      owners.emplace_back(&w, false);
    }
    if (w.err_fd >= 0) {
      fds.push_back({w.err_fd, POLLIN, 0});
      owners.emplace_back(&w, true);
    }
  }
  // With no pipe left this is a plain sleep, still cut short by a signal.
  int ready = poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
  if (ready <= 0) return;
  for (size_t i = 0; i < fds.size(); ++i) {
    if (fds[i].revents == 0) continue;
    auto [w, is_err] = owners[i];
    int& fd = is_err ? w->err_fd : w->out_fd;
    for (int turn = 0; turn < kReadsPerTurn && fd >= 0; ++turn) {
      if (!read_stream(*w, fd, is_err)) break;
    }
  }
}

// Reads one chunk and relays it. Returns true when more may be waiting.
bool ProcessGroup::read_stream(Worker& w, int& fd, bool is_err) {
  std::string buffer;
  switch (read_some(fd, buffer)) {
    case ReadState::kOpen:
      relay(w, buffer, is_err);
      return true;
    case ReadState::kDrained:
      return false;
    case ReadState::kClosed:
      end_stream(w, fd, is_err);
      return false;
  }
  return false;
}

void ProcessGroup::relay(Worker& w, std::string_view data, bool is_err) {
  if (w.log_fd >= 0 && !write_all(w.log_fd, data)) {
    say(fmt::format("tandem-run: cannot write '{}': {}; rank {}'s log stops here", w.log_path,
                    strerror(errno), w.rank));
    ::close(w.log_fd);
    w.log_fd = -1;
  }
  std::string lines = (is_err ? w.err_lines : w.out_lines).feed(data);
  if (!lines.empty()) (is_err ? output_.err : output_.out)(lines);
}

void ProcessGroup::end_stream(Worker& w, int& fd, bool is_err) {
  std::string rest = (is_err ? w.err_lines : w.out_lines).finish();
  if (!rest.empty()) (is_err ? output_.err : output_.out)(rest);
  ::close(fd);
  fd = -1;
}

void ProcessGroup::reap() {
  for (auto& w : workers_) {
    if (w.pid < 0 || w.group_gone) continue;
    // -pid reaps the worker and any process of its group that was
    // reparented to the launcher (it is a child subreaper on Linux).
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-w.pid, &status, WNOHANG)) > 0) {
      if (pid == w.pid) {
        w.exited = true;
        w.wait_status = status;
      }
    }
    if (w.exited && kill(-w.pid, 0) != 0 && errno == ESRCH) w.group_gone = true;
  }
}

void ProcessGroup::signal_all(int sig) {
  for (auto& w : workers_) {
    if (w.pid >= 0 && !w.group_gone) kill(-w.pid, sig);
  }
}

void ProcessGroup::stop(int sig, Clock::time_point now) {
  signal_all(sig);
  if (!sigkill_at_) sigkill_at_ = now + options_.grace_period;
}

void ProcessGroup::kill_survivors(Clock::time_point now) {
  say(fmt::format("tandem-run: {} still running {} after {}; sending SIGKILL", survivors(),
                  format_duration(options_.grace_period),
                  signals_.first() != 0 ? signal_name(signals_.first()) : "SIGTERM"));
  signal_all(SIGKILL);
  give_up_at_ = now + kAfterKill;
}

bool ProcessGroup::all_exited() const {
  for (const auto& w : workers_) {
    if (w.pid >= 0 && !w.exited) return false;
  }
  return true;
}

bool ProcessGroup::all_gone() const {
  for (const auto& w : workers_) {
    if (w.pid >= 0 && !w.group_gone) return false;
  }
  return true;
}

const ProcessGroup::Worker* ProcessGroup::first_failed() const {
  for (const auto& w : workers_) {
    if (w.exited && failed(w.wait_status)) return &w;
  }
  return nullptr;
}

void ProcessGroup::say(const std::string& line) const { output_.status(line + "\n"); }

std::string ProcessGroup::survivors() const {
  std::string out;
  for (const auto& w : workers_) {
    if (w.pid < 0 || w.group_gone) continue;
    if (!out.empty()) out += ", ";
    out += w.exited ? fmt::format("processes left by rank {} (process group {})", w.rank, w.pid)
                    : fmt::format("rank {} (pid {})", w.rank, w.pid);
  }
  return out;
}

}  // namespace tandem::launch
