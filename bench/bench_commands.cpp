#include <CLI/CLI.hpp>

#include "bench/bench.h"
#include "bench/subcommands.h"

namespace tandem::bench {

void add_bench_commands(CLI::App& app, int& exit_code) {
  auto* bench = app.add_subcommand("bench", "Benchmarks (JSON lines and tables)");
  bench->require_subcommand(1);
  add_comm_bench(*bench, exit_code);
  add_ddp_bench(*bench, exit_code);
  add_elastic_bench(*bench, exit_code);
  add_memory_bench(*bench, exit_code);
  add_fsdp_bench(*bench, exit_code);
  add_simulate_bench(*bench, exit_code);
  add_strategies_bench(*bench, exit_code);
  add_pipeline_bench(*bench, exit_code);
}

}  // namespace tandem::bench
