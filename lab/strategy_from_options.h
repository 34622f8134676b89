// The bridge from the trainer's typed options to the simulator's strategy
// description: `tandem simulate` and `tandem lab validate` parse the same
// flags and YAML keys as `tandem train` (train/config.h), and this turns the
// result into a sim::StrategySpec. The pipeline's schedule and stage cut
// come from the parallel layer's own functions (pipeline_schedule,
// balanced_cut_points), so the simulator runs the trainer's order.
//
// Pure functions: thread-safe, nothing collective.
#pragma once

#include <vector>

#include "tandem/sim/profile.h"
#include "tandem/sim/strategy_spec.h"
#include "tandem/train/options.h"

namespace tandem::lab {

// Where each run of consecutive profile layers that share their top-level
// module starts ("layer1_0.conv1", "layer1_0.bn1" -> one group): the zoo's
// repeated blocks, which zero3's automatic wrap policy makes units.
std::vector<int> top_level_groups(const sim::ComputeProfile& profile);

// The strategy `options` describe, for `processes` ranks. --mesh pp=N makes
// it a pipeline of N stages. Throws NotSupported, naming the flag, for what
// the simulator does not model (easgd, backup workers, gradient
// compression, tensor parallelism, a zero3 wrap policy other than auto or
// none), and InvalidArgument when the profile cannot be cut into the stages.
sim::StrategySpec strategy_from_options(const train::TrainerOptions& options,
                                        const sim::ComputeProfile& profile);

}  // namespace tandem::lab
