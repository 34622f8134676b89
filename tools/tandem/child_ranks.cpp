#include "child_ranks.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "tandem/core/check.h"
#include "tandem/launch/launcher.h"

namespace tandem::tools {

std::string run_child_ranks(int ranks, const std::vector<std::string>& args,
                            const std::filesystem::path& dir, int timeout_s) {
  const int port = launch::pick_free_port("127.0.0.1");
  const std::string log = (dir / "output.log").string();
  std::vector<pid_t> pids;
  for (int r = 0; r < ranks; ++r) {
    pid_t pid = fork();
    TANDEM_CHECK(pid >= 0, "fork failed starting rank {}", r);
    if (pid == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
      }
      setenv("OPENBLAS_NUM_THREADS", "1", 0);
      setenv("OMP_NUM_THREADS", "1", 0);
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(ranks).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(ranks).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<std::string> copy = args;
      std::vector<char*> argv;
      for (auto& s : copy) argv.push_back(s.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    pids.push_back(pid);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  std::string failure;
  size_t left = pids.size();
  auto pause = std::chrono::milliseconds(1);
  while (left > 0) {
    for (auto& pid : pids) {
      if (pid <= 0) continue;
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) != pid) continue;
      if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) && failure.empty()) {
        failure = fmt::format("rank {} failed (see {})", &pid - pids.data(), log);
      }
      pid = 0;
      --left;
    }
    if (left == 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      for (pid_t pid : pids) {
        if (pid > 0) kill(pid, SIGKILL);
      }
      for (pid_t pid : pids) {
        if (pid > 0) waitpid(pid, nullptr, 0);
      }
      return fmt::format("did not finish within {} s (--timeout); killed (see {})", timeout_s, log);
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  return failure;
}

}  // namespace tandem::tools
