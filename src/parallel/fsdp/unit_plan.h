// Which parameters form which FullyShardedDataParallel unit, from a wrap
// policy. Pure logic over a module tree; no communicator.
#pragma once

#include <string>
#include <vector>

#include "tandem/parallel/fsdp/wrap_policy.h"

namespace torch::nn {
class Module;
}

namespace tandem::parallel::detail {

struct UnitPlan {
  std::string module;          // submodule path; "" for the root unit
  std::vector<size_t> params;  // indices into param_names, in module order
};

// Assigns each of `param_names` (full names from root.named_parameters(),
// trainable ones) to the deepest wrapped submodule holding it, or to the root
// unit. Units come in the order of their first parameter; empty units are
// left out. Throws InvalidArgument naming the FsdpWrapPolicy field for a
// type or path that matches no submodule, a negative min_num_params, or more
// than one policy at once.
std::vector<UnitPlan> plan_units(const torch::nn::Module& root,
                                 const std::vector<std::string>& param_names,
                                 const FsdpWrapPolicy& policy);

// True if Module::name() `type_name` ("tandem::train::GptBlockImpl") is
// `wanted`, with or without its namespaces ("GptBlockImpl").
bool module_type_matches(const std::string& type_name, const std::string& wanted);

}  // namespace tandem::parallel::detail
