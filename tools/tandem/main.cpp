// `tandem`: the command-line entry point. Subcommands parse flags, call the
// library and map exceptions to exit codes (2: usage, 1: failure). The
// benchmarks are the tandem_bench library's (bench/bench.h).
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "bench/bench.h"
#include "checkpoint_cmd.h"
#include "detect_cmd.h"
#include "lab/lab.h"
#include "tandem/core/env.h"
#include "tandem/core/error.h"
#include "tandem/memory/malloc_tuning.h"
#include "train_cmd.h"

int main(int argc, char** argv) {
  CLI::App app{"tandem: distributed training for LibTorch"};
  app.require_subcommand(1);
  int exit_code = 0;
  tandem::bench::add_bench_commands(app, exit_code);
  tandem::tools::add_train(app, exit_code);
  tandem::tools::add_checkpoint(app, exit_code);
  tandem::tools::add_detect(app, exit_code);
  tandem::lab::add_profile_commands(app, exit_code);
  tandem::lab::add_simulate_command(app, exit_code);
  tandem::lab::add_plan_command(app, exit_code);
  tandem::lab::add_lab_commands(app, exit_code);
  try {
    // Freed activations stay in the heap for the next step (see
    // malloc_tuning.h); TANDEM_KEEP_FREED_MEMORY=0 keeps glibc's defaults.
    if (tandem::env::get(tandem::env::process_lookup(), "TANDEM_KEEP_FREED_MEMORY")
            .value_or("1") != "0") {
      tandem::memory::keep_freed_memory_for_reuse();
    }
    at::set_num_threads(1);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints the message; usage errors exit 2, --help exits 0.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const tandem::InvalidArgument& e) {
    std::cerr << "tandem: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "tandem: error: " << e.what() << "\n";
    return 1;
  }
  return exit_code;
}
