#include "tandem/launch/child_processes.h"

#include <errno.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "launch/signal_relay.h"
#include "launch/spawn.h"
#include "tandem/core/error.h"
#include "tandem/core/log.h"

namespace tandem::launch {
namespace {

// How long the destructor waits for processes it has SIGKILLed.
constexpr Millis kDestructorReap{3000};
// How long one turn of wait() waits for output; it bounds how late an exit
// is noticed when no pipe wakes the loop.
constexpr Millis kPollInterval{20};
constexpr size_t kReadBytes = 64 * 1024;
// Reads per stream and turn, so one chatty child cannot starve the others.
constexpr int kReadsPerTurn = 16;

enum class ReadState { kOpen, kDrained, kClosed };

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

std::string ChildResult::how() const {
  if (timed_out) return "still running at the deadline (SIGKILLed)";
  if (signal != 0) {
    return fmt::format("signal {}{}", signal_name(signal), core_dumped ? " (core dumped)" : "");
  }
  if (exit_code >= 0) return fmt::format("exit code {}", exit_code);
  return "running";
}

ChildProcesses::ChildProcesses(ChildOptions options) : options_(std::move(options)) {}

ChildProcesses::~ChildProcesses() {
  if (!all_gone()) {
    signal_all(SIGKILL);
    Deadline deadline(kDestructorReap, "reap timeout");
    while (!deadline.expired()) {
      reap();
      if (all_gone()) break;
      std::this_thread::sleep_for(Millis(1));
    }
    if (!all_gone()) log::warn("could not reap {} after SIGKILL", survivors());
  }
  for (auto& p : pipes_) {
    for (int* fd : {&p.out, &p.err}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  }
}

void ChildProcesses::start_program(int rank, const std::string& path,
                                   const std::vector<std::string>& argv,
                                   const std::vector<std::string>& env) {
  SpawnedProcess p = spawn_program({path, argv, env});
  add(rank, p.pid, p.out_fd, p.err_fd);
}

void ChildProcesses::start_function(int rank, const std::function<int()>& body) {
  SpawnedProcess p = spawn_function(body, fmt::format("rank {}", rank));
  add(rank, p.pid, p.out_fd, p.err_fd);
}

void ChildProcesses::add(int rank, pid_t pid, int out_fd, int err_fd) {
  ChildResult& r = results_.emplace_back();
  r.rank = rank;
  r.pid = pid;
  pipes_.push_back({.out = out_fd, .err = err_fd});
  log::debug("started rank {} as pid {}", rank, pid);
}

void ChildProcesses::poll(Millis timeout) {
  std::vector<pollfd> fds;
  std::vector<std::pair<size_t, Stream>> owners;  // for each entry of fds
  for (size_t i = 0; i < pipes_.size(); ++i) {
    if (pipes_[i].out >= 0) {
      fds.push_back({pipes_[i].out, POLLIN, 0});
      owners.emplace_back(i, Stream::kStdout);
    }
    if (pipes_[i].err >= 0) {
      fds.push_back({pipes_[i].err, POLLIN, 0});
      owners.emplace_back(i, Stream::kStderr);
    }
  }
  // With no pipe left this is a plain sleep, still cut short by a signal.
  int ready = ::poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
  for (size_t f = 0; ready > 0 && f < fds.size(); ++f) {
    if (fds[f].revents == 0) continue;
    auto [index, stream] = owners[f];
    for (int turn = 0; turn < kReadsPerTurn; ++turn) {
      if (!read_stream(index, stream)) break;
    }
  }
  reap();
}

// Reads one chunk and hands it on. Returns true when more may be waiting.
bool ChildProcesses::read_stream(size_t index, Stream stream) {
  int fd = stream == Stream::kStdout ? pipes_[index].out : pipes_[index].err;
  if (fd < 0) return false;
  std::string buffer;
  switch (read_some(fd, buffer)) {
    case ReadState::kOpen:
      keep(index, buffer);
      if (options_.on_data) options_.on_data(index, stream, buffer);
      return true;
    case ReadState::kDrained:
      return false;
    case ReadState::kClosed:
      close_stream(index, stream);
      return false;
  }
  return false;
}

void ChildProcesses::close_stream(size_t index, Stream stream) {
  int& fd = stream == Stream::kStdout ? pipes_[index].out : pipes_[index].err;
  if (fd < 0) return;
  ::close(fd);
  fd = -1;
  if (options_.on_closed) options_.on_closed(index, stream);
}

// Keeps the last keep_output_bytes; trims only when twice that has piled up,
// so the copying stays linear in what is read.
void ChildProcesses::keep(size_t index, std::string_view data) {
  std::string& out = results_[index].output;
  out.append(data);
  const size_t limit = options_.keep_output_bytes;
  if (out.size() > 2 * limit) out.erase(0, out.size() - limit);
}

void ChildProcesses::drain() {
  for (size_t i = 0; i < pipes_.size(); ++i) {
    for (Stream s : {Stream::kStdout, Stream::kStderr}) {
      while (read_stream(i, s)) {
      }
      close_stream(i, s);
    }
  }
  for (auto& r : results_) {
    if (r.output.size() > options_.keep_output_bytes) {
      r.output.erase(0, r.output.size() - options_.keep_output_bytes);
    }
  }
}

void ChildProcesses::reap() {
  for (size_t i = 0; i < results_.size(); ++i) {
    ChildResult& r = results_[i];
    Pipes& p = pipes_[i];
    if (r.pid < 0 || p.group_gone) continue;
    // -pid reaps the child and, in a child subreaper, any process of its
    // group that was reparented here.
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-r.pid, &status, WNOHANG)) > 0) {
      if (pid != r.pid) continue;
      p.exited = true;
      if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
      if (WIFSIGNALED(status)) {
        r.signal = WTERMSIG(status);
        r.core_dumped = WCOREDUMP(status);
      }
    }
    if (p.exited) finish_group(i);
  }
}

// The child has exited: is anything of its group left?
void ChildProcesses::finish_group(size_t index) {
  const pid_t group = results_[index].pid;
  if (options_.reap_groups) {
    if (kill(-group, 0) != 0 && errno == ESRCH) pipes_[index].group_gone = true;
    return;
  }
  // Not a subreaper: leftovers are init's to reap; stop them now.
  kill(-group, SIGKILL);
  pipes_[index].group_gone = true;
}

void ChildProcesses::signal_all(int sig) {
  for (size_t i = 0; i < results_.size(); ++i) {
    if (results_[i].pid >= 0 && !pipes_[i].group_gone) kill(-results_[i].pid, sig);
  }
}

void ChildProcesses::kill_running_as_timed_out() {
  for (size_t i = 0; i < results_.size(); ++i) {
    if (results_[i].pid < 0 || pipes_[i].group_gone) continue;
    if (!pipes_[i].exited) results_[i].timed_out = true;
    kill(-results_[i].pid, SIGKILL);
  }
}

const std::vector<ChildResult>& ChildProcesses::wait(Clock::time_point deadline) {
  std::optional<Clock::time_point> give_up_at;
  while (true) {
    poll(kPollInterval);
    if (all_gone()) break;
    const auto now = Clock::now();
    if (!give_up_at && now >= deadline) {
      kill_running_as_timed_out();
      give_up_at = now + kAfterKill;
    }
    if (give_up_at && now >= *give_up_at) give_up_on_survivors();
  }
  drain();
  return results_;
}

bool ChildProcesses::all_exited() const {
  for (size_t i = 0; i < results_.size(); ++i) {
    if (results_[i].pid >= 0 && !pipes_[i].exited) return false;
  }
  return true;
}

bool ChildProcesses::all_gone() const {
  for (size_t i = 0; i < results_.size(); ++i) {
    if (results_[i].pid >= 0 && !pipes_[i].group_gone) return false;
  }
  return true;
}

const ChildResult* ChildProcesses::first_failed() const {
  for (size_t i = 0; i < results_.size(); ++i) {
    if (pipes_[i].exited && !results_[i].ok()) return &results_[i];
  }
  return nullptr;
}

std::string ChildProcesses::survivors() const {
  std::string out;
  for (size_t i = 0; i < results_.size(); ++i) {
    const ChildResult& r = results_[i];
    if (r.pid < 0 || pipes_[i].group_gone) continue;
    if (!out.empty()) out += ", ";
    out += pipes_[i].exited
               ? fmt::format("processes left by rank {} (process group {})", r.rank, r.pid)
               : fmt::format("rank {} (pid {})", r.rank, r.pid);
  }
  return out;
}

void ChildProcesses::give_up_on_survivors() const {
  throw TimeoutError(fmt::format(
      "{} did not exit {} after SIGKILL (stuck in the kernel, e.g. on a hung file system); "
      "giving up on them; inspect them with 'ps -o pid,stat,wchan -g PGID'",
      survivors(), format_duration(kAfterKill)));
}

std::string tail_lines(std::string_view text, int lines) {
  size_t pos = text.size();
  // A final newline ends the last line; it does not start another.
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  int seen = 0;
  while (pos > 0) {
    --pos;
    if (text[pos] == '\n' && ++seen >= lines) return std::string(text.substr(pos + 1));
  }
  return std::string(text);
}

std::string describe_failures(const std::vector<ChildResult>& results, int lines) {
  std::string out;
  for (const auto& r : results) {
    if (r.ok()) continue;
    const std::string tail = tail_lines(r.output, lines);
    out += fmt::format("rank {} (pid {}) failed ({}); {}", r.rank, r.pid, r.how(),
                       tail.empty() ? "it wrote nothing\n" : "its output ends:\n" + tail);
    if (!out.empty() && out.back() != '\n') out += '\n';
  }
  return out;
}

namespace {

std::string read_proc_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::optional<pid_t> find_child_with_env(pid_t parent, const std::string& assignment) {
  const std::string want_parent = std::to_string(parent);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    // Fields 3 and 4 of /proc/<pid>/stat, after the parenthesised command name.
    const std::string stat = read_proc_file("/proc/" + name + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos || close + 2 > stat.size()) continue;
    std::istringstream fields(stat.substr(close + 2));
    std::string state, ppid;
    fields >> state >> ppid;
    if (ppid != want_parent || state == "Z") continue;
    std::istringstream vars(read_proc_file("/proc/" + name + "/environ"));
    for (std::string var; std::getline(vars, var, '\0');) {
      if (var == assignment) return static_cast<pid_t>(std::stoi(name));
    }
  }
  return std::nullopt;
}

}  // namespace tandem::launch
