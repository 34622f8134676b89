#include "checkpoint_cmd.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "tandem/core/error.h"
#include "tandem/train/sharded_checkpoint.h"

namespace tandem::tools {
namespace {

// DIR itself when it is a step directory, else the one DIR/latest names.
std::string step_dir_of(const std::string& dir) {
  if (train::is_sharded_checkpoint(dir)) return dir;
  if (!std::filesystem::exists(dir)) {
    throw InvalidArgument(fmt::format("checkpoint consolidate: '{}' does not exist", dir));
  }
  std::string latest = train::latest_checkpoint(dir);
  if (!train::is_sharded_checkpoint(latest)) {
    throw InvalidArgument(fmt::format(
        "checkpoint consolidate: '{}' is a whole-model checkpoint, not a sharded one (written "
        "by --strategy none|ddp); it needs no consolidation",
        latest));
  }
  return latest;
}

}  // namespace

void add_checkpoint(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("checkpoint", "Checkpoint tools");
  cmd->require_subcommand(1);
  auto* consolidate = cmd->add_subcommand(
      "consolidate",
      "Fold a sharded (zero1|zero2|zero3) checkpoint into one LibTorch archive that "
      "torch::load(model, OUT) reads without Tandem");
  auto dir = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  consolidate->add_option("DIR", *dir, "a --checkpoint-dir (its latest) or a step-<N> directory")
      ->required();
  consolidate->add_option("OUT", *out, "the file to write")->required();
  consolidate->callback([dir, out, &exit_code] {
    const std::string step_dir = step_dir_of(*dir);
    train::consolidate_checkpoint(step_dir, *out);
    std::cout << fmt::format("consolidated {} into {}\n", step_dir, *out);
    exit_code = 0;
  });
}

}  // namespace tandem::tools
