// Test helper: runs the tandem-run binary as a child with its stdout and
// stderr captured, and waits for it with a deadline (SIGKILL when it passes,
// so no test hangs and nothing is left behind). Header-only because the test
// binary is built from tests/launch/*_test.cpp.
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace tandem::testing {

inline std::string tandem_run_path() { return TANDEM_BINARY_DIR "/tools/tandem-run"; }

struct TandemRunResult {
  int exit_code = -1;  // valid when signal == 0 and !timed_out
  int signal = 0;
  bool timed_out = false;
  std::string out;
  std::string err;
  std::chrono::milliseconds elapsed{0};
};

class TandemRunProcess {
 public:
  // Starts `tandem-run args...` with `extra_env` ("NAME=value") added.
  explicit TandemRunProcess(const std::vector<std::string>& args,
                            const std::vector<std::string>& extra_env = {}) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) std::abort();
    start_ = std::chrono::steady_clock::now();
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      for (const auto& kv : extra_env) putenv(const_cast<char*>(kv.c_str()));
      std::vector<std::string> all = {tandem_run_path()};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(99);
    }
    ::close(out[1]);
    ::close(err[1]);
    out_fd_ = out[0];
    err_fd_ = err[0];
  }

  ~TandemRunProcess() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      wait_with_deadline(std::chrono::milliseconds(5000));
    }
    if (out_fd_ >= 0) ::close(out_fd_);
    if (err_fd_ >= 0) ::close(err_fd_);
  }

  TandemRunProcess(const TandemRunProcess&) = delete;
  TandemRunProcess& operator=(const TandemRunProcess&) = delete;

  pid_t pid() const { return pid_; }

  // Collects output until tandem-run exits, or SIGKILLs it after `timeout`.
  TandemRunResult wait(std::chrono::milliseconds timeout) {
    bool in_time = wait_with_deadline(timeout);
    if (!in_time) {
      kill(pid_, SIGKILL);
      wait_with_deadline(std::chrono::milliseconds(5000));
      result_.timed_out = true;
    }
    return result_;
  }

 private:
  bool wait_with_deadline(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pump(20);
      if (!reaped_) {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
          reaped_ = true;
          result_.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - start_);
          if (WIFEXITED(status)) result_.exit_code = WEXITSTATUS(status);
          if (WIFSIGNALED(status)) result_.signal = WTERMSIG(status);
        }
      }
      if (reaped_ && out_fd_ < 0 && err_fd_ < 0) return true;
    }
    return reaped_ && out_fd_ < 0 && err_fd_ < 0;
  }

  void pump(int timeout_ms) {
    pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
    if (poll(fds, 2, timeout_ms) <= 0) return;
    read_into(out_fd_, fds[0].revents, result_.out);
    read_into(err_fd_, fds[1].revents, result_.err);
  }

  static void read_into(int& fd, short revents, std::string& text) {
    if (fd < 0 || revents == 0) return;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n > 0) {
      text.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      ::close(fd);
      fd = -1;
    }
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  bool reaped_ = false;
  std::chrono::steady_clock::time_point start_;
  TandemRunResult result_;
};

// Runs tandem-run to completion (at most `timeout`).
inline TandemRunResult run_tandem(const std::vector<std::string>& args,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(30),
                                  const std::vector<std::string>& extra_env = {}) {
  TandemRunProcess process(args, extra_env);
  return process.wait(timeout);
}

// A fresh directory under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tandem-launch-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Waits (bounded) until every file exists and is non-empty.
inline bool wait_for_files(const std::vector<std::string>& paths,
                           std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    bool all = true;
    for (const auto& p : paths) {
      std::error_code ec;
      if (std::filesystem::file_size(p, ec) == 0 || ec) all = false;
    }
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// True while `pid` exists and is not a zombie (an orphan's zombie waits for
// PID 1, which in a container may never reap it).
inline bool process_alive(pid_t pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  auto paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;  // gone meanwhile
  return stat[paren + 2] != 'Z';
}

// Waits (bounded) until none of `pids` is alive.
inline bool wait_until_dead(const std::vector<pid_t>& pids, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    bool any = false;
    for (pid_t p : pids) any = any || process_alive(p);
    if (!any) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace tandem::testing
