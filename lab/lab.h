// The scaling lab's subcommands of `tandem`: each adds its flags to `app`
// and a callback that runs it and sets `exit_code`.
#pragma once

namespace CLI {
class App;
}

namespace tandem::lab {

// `tandem profile` (one process: each layer's compute) and `tandem profile
// links` (under a launcher: alpha-beta fits per transport and algorithm).
void add_profile_commands(CLI::App& app, int& exit_code);  // profile_cmd.cpp
// `tandem simulate`: a profile and a cluster YAML in, predictions out.
void add_simulate_command(CLI::App& app, int& exit_code);  // simulate_cmd.cpp
// `tandem lab validate`: real runs beside the simulator's predictions.
void add_lab_commands(CLI::App& app, int& exit_code);  // lab_cmd.cpp
// `tandem plan`: configurations ranked by predicted throughput.
void add_plan_command(CLI::App& app, int& exit_code);  // plan_cmd.cpp
// `tandem lab converge`, under the lab command `lab`.
void add_converge_command(CLI::App& lab, int& exit_code);  // converge_cmd.cpp

}  // namespace tandem::lab
