// What `tandem simulate` and `tandem lab validate` share: loading and
// checking the simulator's inputs, the list flags, the strategy a name
// selects over the trainer's options, and one result as a JSON line.
// Plain functions; not thread-safe only where they build a model (the
// version check); nothing collective.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/sim/cluster.h"
#include "tandem/sim/profile.h"
#include "tandem/sim/step_simulator.h"
#include "tandem/sim/strategy_spec.h"
#include "tandem/train/options.h"

namespace tandem::lab {

struct SimulationInputs {
  sim::ComputeProfile compute;
  std::vector<sim::LinkFit> links;
  sim::ClusterSpec cluster;
  std::string profile_source;  // the profile paths, for reports
};

// Reads and merges the profiles (cluster left default), checking the model
// version as load_inputs does.
SimulationInputs load_profiles(const std::vector<std::string>& profile_paths);

// Reads and merges the profiles and reads the cluster. Throws
// InvalidArgument naming the file and field for anything malformed, when no
// profile has a compute part, and when the compute part was measured on
// another version of its model (check_model_version).
SimulationInputs load_inputs(const std::vector<std::string>& profile_paths,
                             const std::string& cluster_path);

// Builds the zoo model the profile names and compares its version hash with
// the profile's: a profile of another architecture would predict the wrong
// model. Throws InvalidArgument naming `source`, the model and both hashes.
void check_model_version(const sim::ComputeProfile& profile, const std::string& source);

// "2,3,4" or a doubling range "2..4096" (2, 4, ..., 4096); each >= 1.
// Throws InvalidArgument naming `what` and the text.
std::vector<int> parse_world_sizes(const std::string& text, const std::string& what);
// Comma-separated, non-empty entries.
std::vector<std::string> split_list(const std::string& text, const std::string& what);

// `base` with the strategy `name`: a --strategy spelling of `tandem train`,
// or "pipeline" (ddp over --mesh pp=N; base's mesh if it has pp > 1, else
// pp=2). Other strategies drop the mesh. Throws InvalidArgument listing the
// names for an unknown one.
train::TrainerOptions with_strategy(const train::TrainerOptions& base, const std::string& name);

// Why `spec` cannot run on `processes` ranks (ps: not more than its
// servers; a pipeline: not a multiple of its stages), or "" if it can.
std::string unfit_world_size(const sim::StrategySpec& spec, int processes);

// "1.5 MiB", "96.0 KiB", "512 B", for the lab's tables.
std::string human_bytes(int64_t bytes);

nlohmann::json result_json(const SimulationInputs& in, const std::string& strategy,
                           const sim::SimResult& r);

}  // namespace tandem::lab
