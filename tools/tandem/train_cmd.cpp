#include "train_cmd.h"

#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <type_traits>
#include <variant>
#include <vector>

#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"
#include "tandem/train/config.h"
#include "tandem/train/trainer.h"

namespace tandem::tools {
namespace {

constexpr const char* kConfigHelp =
    "Config files: --config FILE reads a YAML mapping whose keys are the long flags above\n"
    "without '--'; flags given on the command line override the file. For example:\n"
    "  model: resnet18\n"
    "  data: synthetic-cifar\n"
    "  batch-size: 32\n"
    "  lr: 0.1\n"
    "  nesterov: true\n"
    "  checkpoint-dir: ckpt\n"
    "A true in the file turns off with --nesterov=false.";

// One flag per key of the table in tandem/train/config.h, bound to `flags`.
void add_key_flags(CLI::App& cmd, train::TrainConfig& flags) {
  for (const auto& key : train::train_config_keys()) {
    const std::string flag = "--" + std::string(key.name);
    const std::string help(key.help);
    std::visit(
        [&](auto field) {
          auto& value = field(flags);
          if constexpr (std::is_same_v<std::remove_reference_t<decltype(value)>, bool>) {
            cmd.add_flag(flag, value, help);
          } else {
            cmd.add_option(flag, value, help)->capture_default_str();
          }
        },
        key.field);
  }
}

}  // namespace

void add_train(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<train::TrainConfig>();
  auto config_path = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "train", "Train a model (run under tandem-run for several ranks; synthetic data by default)");
  add_key_flags(*cmd, *flags);
  auto* config_opt = cmd->add_option(
      "--config", *config_path,
      "YAML file of these options (keys: the long flags without --); flags override it");
  cmd->footer(kConfigHelp);
  cmd->callback([cmd, flags, config_path, config_opt, &exit_code] {
    train::TrainConfig c = *flags;
    if (config_opt->count() > 0) {
      std::vector<std::string> given;
      for (const auto& key : train::train_config_keys()) {
        if (cmd->get_option("--" + std::string(key.name))->count() > 0) {
          given.emplace_back(key.name);
        }
      }
      c = train::load_train_config(*config_path);
      train::override_keys(c, *flags, given);
    }
    TANDEM_CHECK(c.threads >= 1, "--threads must be at least 1 (got {})", c.threads);
    at::set_num_threads(c.threads);
    InitOptions io;
    io.backend = parse_backend(c.backend);
    auto comm = init(io);
    train::train(c.trainer, comm, &std::cout);
    exit_code = 0;
  });
}

}  // namespace tandem::tools
