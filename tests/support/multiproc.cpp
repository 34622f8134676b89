#include "tests/support/multiproc.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>

namespace tandem::testing {
namespace {

struct Child {
  pid_t pid = -1;
  int out_fd = -1;
  bool done = false;
  RankResult result;
};

[[noreturn]] void run_child(int rank, int size, int port,
                            const std::function<void(int, int, int)>& body,
                            const MultiprocOptions& options) {
  for (const auto& kv : options.env) putenv(strdup(kv.c_str()));
  int code = 0;
  try {
    body(rank, size, port);
    if (::testing::Test::HasFailure()) code = 1;
  } catch (const std::exception& e) {
    std::cerr << "rank " << rank << " threw: " << e.what() << std::endl;
    code = 2;
  } catch (...) {
    std::cerr << "rank " << rank << " threw an unknown exception" << std::endl;
    code = 2;
  }
  std::cout.flush();
  std::cerr.flush();
  // _exit: no atexit handlers or static destructors of the parent's state.
  _exit(code);
}

void drain(Child& c) {
  char buf[4096];
  while (true) {
    ssize_t n = read(c.out_fd, buf, sizeof(buf));
    if (n <= 0) return;
    c.result.output.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

std::string tail(const std::string& text, int lines) {
  size_t pos = text.size();
  int seen = 0;
  while (pos > 0) {
    --pos;
    if (text[pos] == '\n' && ++seen > lines) return text.substr(pos + 1);
  }
  return text;
}

std::vector<RankResult> run_ranks(int world_size, const std::function<void(int, int, int)>& body,
                                  const MultiprocOptions& options) {
  int port = free_port();
  std::cout.flush();
  std::cerr.flush();
  std::vector<Child> children(static_cast<size_t>(world_size));
  for (int r = 0; r < world_size; ++r) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      dup2(fds[1], STDOUT_FILENO);
      dup2(fds[1], STDERR_FILENO);
      close(fds[1]);
      // Die with the parent, so that a killed test run leaves no rank behind.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      run_child(r, world_size, port, body, options);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    children[r].pid = pid;
    children[r].out_fd = fds[0];
    children[r].result.rank = r;
  }

  auto deadline = std::chrono::steady_clock::now() + options.timeout;
  int running = world_size;
  while (running > 0) {
    std::vector<pollfd> pfds;
    for (auto& c : children) pfds.push_back({c.out_fd, POLLIN, 0});
    poll(pfds.data(), pfds.size(), 20);
    for (auto& c : children) drain(c);
    for (auto& c : children) {
      if (c.done) continue;
      int status = 0;
      if (waitpid(c.pid, &status, WNOHANG) == c.pid) {
        c.done = true;
        --running;
        if (WIFEXITED(status)) c.result.exit_code = WEXITSTATUS(status);
        if (WIFSIGNALED(status)) c.result.signal = WTERMSIG(status);
      }
    }
    if (running > 0 && std::chrono::steady_clock::now() > deadline) {
      for (auto& c : children) {
        if (!c.done) {
          kill(c.pid, SIGKILL);
          c.result.killed_by_harness = true;
        }
      }
      for (auto& c : children) {
        if (!c.done) {
          int status = 0;
          waitpid(c.pid, &status, 0);
          c.done = true;
          c.result.signal = SIGKILL;
        }
      }
      running = 0;
    }
  }
  std::vector<RankResult> results;
  for (auto& c : children) {
    drain(c);
    close(c.out_fd);
    results.push_back(std::move(c.result));
  }
  return results;
}

void expect_ranks_succeed(int world_size, const std::function<void(int, int, int)>& body,
                          const MultiprocOptions& options) {
  auto results = run_ranks(world_size, body, options);
  for (const auto& r : results) {
    bool ok = r.signal == 0 && r.exit_code == 0;
    EXPECT_TRUE(ok) << "rank " << r.rank
                    << (r.killed_by_harness ? " hung and was killed after the deadline"
                        : r.signal          ? " died by signal " + std::to_string(r.signal)
                                            : " exited with " + std::to_string(r.exit_code))
                    << "; its output ends:\n"
                    << tail(r.output);
  }
}

}  // namespace tandem::testing
