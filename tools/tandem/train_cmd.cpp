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
#include "tandem/launch/elastic_protocol.h"
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
// A text key's flag parses its value into `flags` as CLI11 reads it.
void add_key_flags(CLI::App& cmd, train::TrainConfig& flags) {
  const train::TrainConfig defaults;
  for (const auto& key : train::train_config_keys()) {
    const std::string flag = "--" + std::string(key.name);
    const std::string help(key.help);
    std::visit(
        [&](auto field) {
          if constexpr (std::is_same_v<decltype(field), train::TextField>) {
            auto set = [&flags, field](const std::string& text) { field.set(flags, text); };
            CLI::Option* opt = field.flag ? cmd.add_flag(flag)->description(help)->each(set)
                                          : cmd.add_option_function<std::string>(flag, set, help);
            const std::string shown = field.get(defaults);
            if (!field.flag && !shown.empty()) opt->default_str(shown);
            if (!field.flag) opt->type_name(std::string(field.type_name));
          } else if constexpr (std::is_same_v<std::remove_reference_t<decltype(field(flags))>,
                                              bool>) {
            cmd.add_flag(flag, field(flags), help);
          } else {
            cmd.add_option(flag, field(flags), help)->capture_default_str();
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
    io.timeout = c.comm_timeout;  // unset: TANDEM_COMM_TIMEOUT, else the default
    io.rendezvous_timeout = c.rendezvous_timeout;
    if (launch::elastic::read_elastic_env().enabled) {
      train::train_elastic(c.trainer, io, &std::cout);
    } else {
      train::train(c.trainer, init(io), &std::cout);
    }
    exit_code = 0;
  });
}

}  // namespace tandem::tools
