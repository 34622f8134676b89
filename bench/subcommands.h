// The `tandem bench` subcommands, one per benchmark file; bench.h's
// add_bench_commands adds them all. Each adds its flags to a subcommand of
// `bench` whose callback runs the benchmark (in this process, or as the
// parent of its child ranks) and sets `exit_code`.
#pragma once

namespace CLI {
class App;
}

namespace tandem::bench {

void add_comm_bench(CLI::App& bench, int& exit_code);        // comm_bench.cpp
void add_ddp_bench(CLI::App& bench, int& exit_code);         // ddp_bench.cpp
void add_elastic_bench(CLI::App& bench, int& exit_code);     // elastic_bench.cpp
void add_fsdp_bench(CLI::App& bench, int& exit_code);        // fsdp_bench.cpp
void add_memory_bench(CLI::App& bench, int& exit_code);      // memory_bench.cpp
void add_pipeline_bench(CLI::App& bench, int& exit_code);    // pipeline_bench.cpp
void add_simulate_bench(CLI::App& bench, int& exit_code);    // simulate_bench.cpp
void add_strategies_bench(CLI::App& bench, int& exit_code);  // strategies_bench.cpp

}  // namespace tandem::bench
