// `tandem train`: a YAML config file (--config) and flags over it ->
// tandem::train::TrainConfig -> train(), on the communicator that
// tandem::init() builds from the launcher's environment. The flags and the
// config keys come from one table, tandem::train::train_config_keys().
#pragma once

namespace CLI {
class App;
}

namespace tandem::tools {

// Adds the `train` subcommand; its callback trains and sets `exit_code`.
void add_train(CLI::App& app, int& exit_code);

}  // namespace tandem::tools
