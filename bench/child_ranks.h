// How the benchmarks run their child ranks: every child is started through
// launch::ChildProcesses (the launcher's process starter) with torchrun's
// variables (RANK, WORLD_SIZE, MASTER_ADDR/PORT on a free loopback port) and
// one BLAS/OpenMP thread unless the user set otherwise, waited for with one
// deadline, and reports to the parent in JSON lines on its stdout. A bench's
// own children rerun `tandem bench NAME` with its options as JSON in the
// hidden --child flag, so no bench rebuilds its command line by hand.
// Thread-compatible: call from the main thread of a `tandem` process.
#pragma once

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace tandem::bench {

// How long a parent waits for one run of its children (each collective of
// theirs times out after 300 s), before it kills them all.
inline constexpr std::chrono::seconds kChildTimeout{1800};

struct ChildRunOptions {
  // Each child a world of its own (RANK 0, WORLD_SIZE 1), for processes
  // that work side by side without talking.
  bool independent = false;
  std::chrono::seconds timeout = kChildTimeout;
  // Set: the children's stdout and stderr are appended to this file. Unset:
  // their stderr goes on to this process's stderr as it comes.
  std::filesystem::path log_file;
};

// Starts `/proc/self/exe args...` `ranks` times (args: the children's argv
// after the program, e.g. {"train", ...}) and waits for them. Returns the
// JSON objects the children printed as lines on stdout (rank 0's first, then
// rank 1's, ...); other lines are ignored. Throws tandem::Error naming the
// run (`what`: "bench ddp: the 2-rank run"), and each failed rank with how it
// ended and the tail of its output, when any child fails or the deadline
// passes (the children are then killed and reaped).
std::vector<nlohmann::json> run_children(const std::string& what,
                                         const std::vector<std::string>& args, int ranks,
                                         const ChildRunOptions& options = {});

// The argv (after the program) that makes a child run `tandem bench NAME`
// with `options`, which the child reads back with child_options().
std::vector<std::string> child_args(const std::string& bench, const nlohmann::json& options);

// Adds the hidden --child flag to a bench subcommand; `json` gets its text.
void add_child_flag(CLI::App& command, std::string& json);

// In a child: the options its parent passed (the --child text). Throws
// tandem::InvalidArgument when the text is not a JSON object.
nlohmann::json child_options(const std::string& json);

// In a child: prints `line` as one JSON line on stdout and flushes it.
void report(const nlohmann::json& line);

}  // namespace tandem::bench
