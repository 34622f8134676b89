#include "child_ranks.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "tandem/core/check.h"
#include "tandem/launch/launcher.h"

namespace tandem::tools {
namespace {

// In the child: the environment of rank r, then exec.
[[noreturn]] void become_rank(const std::vector<std::string>& args, int r, int world, int port) {
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  setenv("OMP_NUM_THREADS", "1", 0);
  setenv("RANK", std::to_string(r).c_str(), 1);
  setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
  setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
  setenv("LOCAL_WORLD_SIZE", std::to_string(world).c_str(), 1);
  if (world > 1) {
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
  }
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& s : copy) argv.push_back(s.data());
  argv.push_back(nullptr);
  execv("/proc/self/exe", argv.data());
  _exit(127);
}

}  // namespace

ChildRanksResult run_children(const std::vector<std::string>& args, const ChildRanksOptions& o) {
  TANDEM_CHECK(o.processes >= 1 && !args.empty(), "run_children: nothing to start");
  const bool capture = o.log_dir.empty();
  const std::string log = capture ? "" : (o.log_dir / "output.log").string();
  const std::string see = capture ? "its errors are above" : "see " + log;
  const int port = o.independent ? 0 : launch::pick_free_port("127.0.0.1");
  int fds[2] = {-1, -1};
  if (capture) {
    TANDEM_CHECK(pipe(fds) == 0, "run_children: pipe failed");
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  }
  std::vector<pid_t> pids;
  for (int r = 0; r < o.processes; ++r) {
    pid_t pid = fork();
    TANDEM_CHECK(pid >= 0, "fork failed starting rank {}", r);
    if (pid == 0) {
      if (capture) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
      } else if (int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644); fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
      }
      if (o.independent) become_rank(args, 0, 1, port);
      become_rank(args, r, o.processes, port);
    }
    pids.push_back(pid);
  }
  if (capture) close(fds[1]);
  ChildRanksResult result;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.timeout_s);
  size_t left = pids.size();
  bool open_pipe = capture;
  while (left > 0 || open_pipe) {
    if (open_pipe) {
      // Drain what the children wrote, waiting up to 20 ms for more.
      pollfd p{fds[0], POLLIN, 0};
      poll(&p, 1, 20);
      char buf[4096];
      ssize_t got;
      while ((got = read(fds[0], buf, sizeof(buf))) > 0) {
        result.output.append(buf, static_cast<size_t>(got));
      }
      if (got == 0) open_pipe = false;  // every child closed its end
    } else {
      poll(nullptr, 0, 20);
    }
    for (auto& pid : pids) {
      if (pid <= 0) continue;
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) != pid) continue;
      if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) && result.error.empty()) {
        result.error = fmt::format("rank {} failed ({})", &pid - pids.data(), see);
      }
      pid = 0;
      --left;
    }
    if ((left > 0 || open_pipe) && std::chrono::steady_clock::now() > deadline) {
      for (pid_t pid : pids) {
        if (pid > 0) kill(pid, SIGKILL);
      }
      for (pid_t pid : pids) {
        if (pid > 0) waitpid(pid, nullptr, 0);
      }
      result.error = fmt::format("did not finish within {} s; killed ({})", o.timeout_s, see);
      break;
    }
  }
  if (capture) close(fds[0]);
  return result;
}

std::string run_child_ranks(int ranks, const std::vector<std::string>& args,
                            const std::filesystem::path& dir, int timeout_s) {
  return run_children(args, {.processes = ranks, .timeout_s = timeout_s, .log_dir = dir}).error;
}

}  // namespace tandem::tools
