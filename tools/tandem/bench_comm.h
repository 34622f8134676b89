// `tandem bench comm`: collective bandwidth, like nccl-tests. Run under
// tandem-run or mpirun; rank 0 prints a table (and JSON lines) of bytes,
// time, algbw and busbw per backend, op and size. Backends are measured
// side by side, size by size, in the same processes, since the machines are
// noisy.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace tandem::tools {

struct CommBenchOptions {
  std::vector<std::string> backends = {"auto"};   // auto, shm, gloo, mpi, mpi-raw, or "all"
  std::vector<std::string> ops = {"all_reduce"};  // or "all"
  int64_t min_bytes = 4 << 10;
  int64_t max_bytes = 64 << 20;
  int step_factor = 4;
  int iters = 0;  // 0: chosen per size (about 64 MiB moved, 5..1000)
  int warmup = 2;
  int rounds = 3;  // interleaved repetitions; the median is reported
  std::string dtype = "float32";
  std::string json;  // file for JSON lines ("-": stdout)
};

// Adds the `comm` subcommand to `bench`; the callback runs the benchmark.
void add_bench_comm(CLI::App& bench, int& exit_code);

// Runs the benchmark in this process (collective over the job). Returns 0.
int run_comm_bench(const CommBenchOptions& options);

}  // namespace tandem::tools
