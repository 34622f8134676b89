#include "bench/child_ranks.h"

#include <errno.h>
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

#include "tandem/core/error.h"
#include "tandem/launch/child_processes.h"
#include "tandem/launch/launch_options.h"
#include "tandem/launch/launcher.h"

namespace tandem::bench {
namespace {

constexpr const char* kChildFlag = "--child";

void write_stderr(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(STDERR_FILENO, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a closed stderr drops the output, not the run
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Child r's environment: torchrun's variables for a world of run.ranks, or
// of one when the children are independent.
std::vector<std::string> child_environment(int ranks, bool independent, int r, int port) {
  launch::LaunchOptions world;
  world.nproc_per_node = independent ? 1 : ranks;
  launch::WorkerIdentity who;  // store_served stays false: rank 0 serves the store here
  who.local_rank = independent ? 0 : r;
  who.master_port = port;
  return launch::worker_environment(launch::current_environment(), world, who);
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line.front() != '{') continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

}  // namespace

std::vector<nlohmann::json> run_children(const std::string& what,
                                         const std::vector<std::string>& args, int ranks,
                                         const ChildRunOptions& o) {
  std::ofstream log;
  if (!o.log_file.empty()) {
    log.open(o.log_file, std::ios::app);
    if (!log) throw Error(fmt::format("{}: cannot write '{}'", what, o.log_file.string()));
  }
  std::vector<std::string> out(static_cast<size_t>(ranks));
  launch::ChildOptions sink;
  sink.on_data = [&](size_t i, launch::Stream stream, std::string_view data) {
    if (stream == launch::Stream::kStdout) out[i].append(data);
    if (log.is_open()) {
      log.write(data.data(), static_cast<std::streamsize>(data.size()));
    } else if (stream == launch::Stream::kStderr) {
      write_stderr(data);
    }
  };
  launch::ChildProcesses children(std::move(sink));
  const int port = launch::pick_free_port("127.0.0.1");
  std::vector<std::string> argv = {"tandem"};
  argv.insert(argv.end(), args.begin(), args.end());
  for (int r = 0; r < ranks; ++r) {
    children.start_program(r, "/proc/self/exe", argv,
                           child_environment(ranks, o.independent, r, port));
  }
  const auto& results = children.wait(Clock::now() + o.timeout);
  const std::string failures = launch::describe_failures(results);
  if (!failures.empty()) {
    throw Error(fmt::format("{} failed (deadline {} s{}):\n{}", what, o.timeout.count(),
                            log.is_open() ? ", all output in " + o.log_file.string() : "",
                            failures));
  }
  std::vector<nlohmann::json> lines;
  for (const auto& text : out) {
    for (auto& j : json_lines(text)) lines.push_back(std::move(j));
  }
  return lines;
}

std::vector<std::string> child_args(const std::string& bench, const nlohmann::json& options) {
  return {"bench", bench, kChildFlag, options.dump()};
}

void add_child_flag(CLI::App& command, std::string& json) {
  command.add_option(kChildFlag, json, "internal: run as a child rank with these options")
      ->group("");
}

nlohmann::json child_options(const std::string& json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    throw InvalidArgument(
        fmt::format("{} takes the options a parent bench passes as a JSON "
                    "object (got '{}'); it is not for direct use",
                    kChildFlag, json));
  }
  return j;
}

void report(const nlohmann::json& line) { std::cout << line.dump() << std::endl; }

}  // namespace tandem::bench
