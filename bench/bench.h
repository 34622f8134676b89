// Tandem's benchmarks as a library: the `tandem bench` subcommands (comm,
// ddp, elastic, fsdp, memory, pipeline, strategies), which the `tandem` tool adds to
// its command line. Each benchmark prints JSON lines (and tables); those that
// run whole jobs start their ranks as child processes of the `tandem` tool
// (bench/child_ranks.h). See docs/benchmarks.md. Not installed.
// Thread-compatible: build the command line and parse on one thread.
#pragma once

namespace CLI {
class App;
}

namespace tandem::bench {

// Adds `bench` and its subcommands to `app`. A subcommand's callback runs
// its benchmark and stores the exit code in `exit_code` (which must outlive
// the parse): 0 on success, 1 when runs failed. Bad flags throw
// tandem::InvalidArgument from app.parse(); failed child runs throw
// tandem::Error.
void add_bench_commands(CLI::App& app, int& exit_code);

}  // namespace tandem::bench
