// Benchmarks that run whole training jobs start their ranks as children:
// each is this executable (`/proc/self/exe ARGS...`) with torchrun's
// variables (RANK, WORLD_SIZE, MASTER_ADDR/PORT on a free loopback port)
// and one intra-op thread, its output appended to DIR/output.log.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace tandem::tools {

// Starts `ranks` children and waits for them, at most `timeout_s` seconds,
// after which it kills them all. Returns "" when every rank exited 0, else
// what went wrong (naming the first failed rank and the log).
std::string run_child_ranks(int ranks, const std::vector<std::string>& args,
                            const std::filesystem::path& dir, int timeout_s);

}  // namespace tandem::tools
