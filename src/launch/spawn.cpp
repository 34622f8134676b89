#include "launch/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "launch/signal_relay.h"
#include "tandem/core/deadline.h"
#include "tandem/core/error.h"
#include "tandem/core/log.h"
#include "tandem/launch/program.h"

namespace tandem::launch {
namespace {

// exec normally succeeds within milliseconds; the bound only guards
// against a program stored on a hung network file system.
constexpr Millis kExecTimeout{10'000};

struct Pipe {
  int read = -1;
  int write = -1;
};

Pipe make_pipe(const char* what) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    throw Error(
        fmt::format("cannot create the {} pipe for a child process: {}", what, strerror(errno)));
  }
  return {fds[0], fds[1]};
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

std::vector<char*> c_strings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (const auto& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// The standard streams and pipes of one child, opened before fork.
struct ChildFds {
  int dev_null = -1;
  Pipe out;
  Pipe err;
};

ChildFds open_child_fds() {
  ChildFds fds;
  fds.dev_null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fds.dev_null < 0) throw Error(fmt::format("cannot open /dev/null: {}", strerror(errno)));
  fds.out = make_pipe("stdout");
  fds.err = make_pipe("stderr");
  return fds;
}

// Runs in the child right after fork: async-signal-safe calls only.
void become_child(pid_t parent, const ChildFds& fds) {
  setpgid(0, 0);
#ifdef __linux__
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The parent may have died before prctl took effect.
  if (getppid() != parent) _exit(127);
#else
  (void)parent;
#endif
  dup2(fds.dev_null, STDIN_FILENO);
  dup2(fds.out.write, STDOUT_FILENO);
  dup2(fds.err.write, STDERR_FILENO);
  // Handlers vanish at exec, but an ignored SIGPIPE and the signal mask
  // would be inherited; the child starts with defaults.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGQUIT, SIGHUP}) sigaction(sig, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
}

// In the parent after fork: closes the child's ends. Throws when fork failed.
SpawnedProcess finish_fork(pid_t pid, int fork_errno, ChildFds& fds) {
  // Also set here: the caller may signal the group before the child runs.
  if (pid > 0) setpgid(pid, pid);
  close_fd(fds.dev_null);
  close_fd(fds.out.write);
  close_fd(fds.err.write);
  if (pid < 0) {
    close_fd(fds.out.read);
    close_fd(fds.err.read);
    throw Error(fmt::format("cannot fork a child process: {}", strerror(fork_errno)));
  }
  fcntl(fds.out.read, F_SETFL, fcntl(fds.out.read, F_GETFL) | O_NONBLOCK);
  fcntl(fds.err.read, F_SETFL, fcntl(fds.err.read, F_GETFL) | O_NONBLOCK);
  return {pid, fds.out.read, fds.err.read};
}

// A function child: its result, or 2 when it throws, is its exit code.
[[noreturn]] void run_function(const std::function<int()>& body, const std::string& name) {
  int code = 2;
  try {
    code = body();
  } catch (const std::exception& e) {
    std::cerr << name << " threw: " << e.what() << std::endl;
  } catch (...) {
    std::cerr << name << " threw an unknown exception" << std::endl;
  }
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  // _exit: no atexit handlers or static destructors of the parent's state.
  _exit(code);
}

// Reads the exec-status pipe: 0 when exec succeeded (the pipe closed), the
// child's errno when it failed.
int wait_for_exec(int fd, pid_t pid) {
  Deadline deadline(kExecTimeout, "exec timeout");
  while (!deadline.expired()) {
    pollfd p{fd, POLLIN, 0};
    int ready = poll(&p, 1, static_cast<int>(std::min<int64_t>(deadline.remaining().count(), 100)));
    if (ready <= 0) continue;
    int error = 0;
    ssize_t n = ::read(fd, &error, sizeof(error));
    if (n < 0 && errno == EINTR) continue;
    return n == static_cast<ssize_t>(sizeof(error)) ? error : 0;
  }
  log::warn("child pid {} did not finish exec within {}; assuming it started", pid,
            format_duration(kExecTimeout));
  return 0;
}

// The child has already failed and calls _exit at once; SIGKILL bounds the
// wait anyway.
void reap_failed_child(pid_t pid) {
  for (int sig : {0, SIGKILL}) {
    if (sig != 0) kill(pid, sig);
    Deadline deadline(Millis(5000), "reap timeout");
    while (!deadline.expired()) {
      if (waitpid(pid, nullptr, WNOHANG) != 0) return;
      std::this_thread::sleep_for(Millis(1));
    }
  }
  log::warn("child pid {} did not exit after a failed exec and SIGKILL", pid);
}

}  // namespace

SpawnedProcess spawn_program(const SpawnRequest& request) {
  std::vector<char*> argv = c_strings(request.argv);
  std::vector<char*> envp = c_strings(request.env);
  ChildFds fds = open_child_fds();
  Pipe exec_status = make_pipe("exec status");
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    become_child(parent, fds);
    execve(request.path.c_str(), argv.data(), envp.data());
    int error = errno;
    ssize_t ignored = ::write(exec_status.write, &error, sizeof(error));
    (void)ignored;
    _exit(127);
  }
  int fork_errno = errno;
  close_fd(exec_status.write);
  SpawnedProcess spawned;
  try {
    spawned = finish_fork(pid, fork_errno, fds);
  } catch (...) {
    close_fd(exec_status.read);
    throw;
  }
  int exec_errno = wait_for_exec(exec_status.read, pid);
  close_fd(exec_status.read);
  if (exec_errno != 0) {
    close_fd(spawned.out_fd);
    close_fd(spawned.err_fd);
    reap_failed_child(pid);
    int code = exec_errno == ENOENT ? 127 : 126;
    throw ProgramError(fmt::format("cannot execute '{}': {}", request.path, strerror(exec_errno)),
                       code);
  }
  return spawned;
}

SpawnedProcess spawn_function(const std::function<int()>& body, const std::string& name) {
  ChildFds fds = open_child_fds();
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);  // nothing buffered here is written twice
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    become_child(parent, fds);
    ::close(fds.out.read);
    ::close(fds.err.read);
    run_function(body, name);
  }
  return finish_fork(pid, errno, fds);
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exit code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return fmt::format("signal {}{}", signal_name(WTERMSIG(status)),
                       WCOREDUMP(status) ? " (core dumped)" : "");
  }
  return fmt::format("wait status {:#x}", status);
}

bool failed(int status) { return !WIFEXITED(status) || WEXITSTATUS(status) != 0; }

}  // namespace tandem::launch
