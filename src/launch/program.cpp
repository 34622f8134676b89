#include "tandem/launch/program.h"

#include <errno.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>

extern char** environ;

namespace tandem::launch {
namespace {

// execvp's search path when PATH is unset.
constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

// Why `path` cannot be executed, or empty when it can.
std::string exec_problem(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return strerror(errno);
  if (S_ISDIR(st.st_mode)) return "it is a directory";
  if (::access(path.c_str(), X_OK) != 0) return "it is not executable (check its permissions)";
  return {};
}

}  // namespace

std::string resolve_program(const std::string& program, const std::optional<std::string>& path) {
  if (program.find('/') != std::string::npos) {
    std::string problem = exec_problem(program);
    if (problem.empty()) return program;
    int code = ::access(program.c_str(), F_OK) == 0 ? 126 : 127;
    throw ProgramError(fmt::format("cannot execute '{}': {}", program, problem), code);
  }
  std::string search = path.value_or(kDefaultPath);
  std::string first_problem;  // of a file found but not runnable
  size_t begin = 0;
  while (begin <= search.size()) {
    size_t end = search.find(':', begin);
    if (end == std::string::npos) end = search.size();
    std::string dir = search.substr(begin, end - begin);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    if (::access(candidate.c_str(), F_OK) == 0) {
      std::string problem = exec_problem(candidate);
      if (problem.empty()) return candidate;
      if (first_problem.empty()) first_problem = fmt::format("'{}': {}", candidate, problem);
    }
    begin = end + 1;
  }
  if (!first_problem.empty()) {
    throw ProgramError(fmt::format("cannot execute '{}': found {}", program, first_problem), 126);
  }
  throw ProgramError(fmt::format("cannot execute '{}': no such program in PATH ({}); give its "
                                 "path (e.g. ./{}) or fix PATH",
                                 program, search, program),
                     127);
}

std::vector<std::string> current_environment() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
  return env;
}

int pick_free_port(const std::string& address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(address.c_str(), "0", &hints, &found);
  if (rc != 0) {
    throw Error(fmt::format("cannot resolve --master-addr '{}': {}", address, gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> list(found, freeaddrinfo);
  std::string last_error = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_error = strerror(errno);
      continue;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof(bound);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
      ::close(fd);
      int port = bound.ss_family == AF_INET6
                     ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                     : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
      return port;
    }
    last_error = strerror(errno);
    ::close(fd);
  }
  throw Error(
      fmt::format("cannot pick a free port on --master-addr '{}': {}; is it an address of "
                  "this machine? Otherwise pass --master-port",
                  address, last_error));
}

}  // namespace tandem::launch
