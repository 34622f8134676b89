// `tandem train`: flags -> tandem::train::TrainerOptions -> train(), on the
// communicator that tandem::init() builds from the launcher's environment.
#pragma once

namespace CLI {
class App;
}

namespace tandem::tools {

// Adds the `train` subcommand; its callback trains and sets `exit_code`.
void add_train(CLI::App& app, int& exit_code);

}  // namespace tandem::tools
