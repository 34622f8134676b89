// Test helper: runs the tandem-run binary as a child (through
// launch::ChildProcesses) with its stdout and stderr captured, and waits for
// it with a deadline (SIGKILL when it passes, so no test hangs and nothing is
// left behind). Header-only because the test binary is built from
// tests/launch/*_test.cpp.
#pragma once

#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tandem/launch/child_processes.h"
#include "tandem/launch/launch_options.h"
#include "tandem/launch/launcher.h"

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
                            const std::vector<std::string>& extra_env = {})
      : start_(std::chrono::steady_clock::now()), process_(capture()) {
    std::vector<std::string> argv = {tandem_run_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    process_.start_program(0, argv[0], argv,
                           launch::environment_with(launch::current_environment(), extra_env));
  }

  pid_t pid() const { return process_.results()[0].pid; }

  // Collects output until tandem-run exits, or SIGKILLs it after `timeout`.
  TandemRunResult wait(std::chrono::milliseconds timeout) {
    const launch::ChildResult& r = process_.wait(std::chrono::steady_clock::now() + timeout)[0];
    result_.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start_);
    result_.exit_code = r.exit_code;
    result_.signal = r.timed_out ? 0 : r.signal;
    result_.timed_out = r.timed_out;
    return result_;
  }

 private:
  launch::ChildOptions capture() {
    launch::ChildOptions o;
    o.on_data = [this](size_t, launch::Stream s, std::string_view d) {
      (s == launch::Stream::kStdout ? result_.out : result_.err).append(d);
    };
    return o;
  }

  std::chrono::steady_clock::time_point start_;
  TandemRunResult result_;
  launch::ChildProcesses process_;  // after result_, which its sink fills
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

// The pid a worker script wrote to `path`.
inline pid_t read_pid(const std::string& path) {
  return static_cast<pid_t>(std::stol(read_text(path)));
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
