// `tandem`: the command-line entry point. Subcommands parse flags, call the
// library and map exceptions to exit codes (2: usage, 1: failure).
#include <iostream>

#include <CLI/CLI.hpp>

#include "tandem/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"tandem: distributed training for LibTorch"};
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
