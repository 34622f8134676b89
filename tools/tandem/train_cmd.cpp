#include "train_cmd.h"

#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <vector>

#include "bench/train_key_flags.h"
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

}  // namespace

void add_train(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<train::TrainConfig>();
  auto config_path = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "train", "Train a model (run under tandem-run for several ranks; synthetic data by default)");
  bench::add_train_key_flags(*cmd, *flags);
  auto* config_opt = cmd->add_option(
      "--config", *config_path,
      "YAML file of these options (keys: the long flags without --); flags override it");
  cmd->footer(kConfigHelp);
  cmd->callback([cmd, flags, config_path, config_opt, &exit_code] {
    train::TrainConfig c = *flags;
    if (config_opt->count() > 0) {
      const std::vector<std::string> given = bench::given_train_keys(*cmd);
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
