// FsdpWrapPolicy: which submodules of a model become FullyShardedDataParallel
// units (fully_sharded_data_parallel.h), and its text form for command lines
// and configs. Plain data and a parser: thread-compatible, not collective.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::parallel {

// Which submodules become units. Set at most one of the three; with none,
// the whole model is one unit (no memory saved on gathered parameters).
struct FsdpWrapPolicy {
  // Submodules whose C++ type is one of these, as Module::name() reports it,
  // with or without namespaces: "GptBlockImpl", "torch::nn::LinearImpl".
  std::vector<std::string> module_types;
  // When > 0: bottom-up, a submodule whose parameters not already in a unit
  // number at least this many becomes a unit (PyTorch's
  // size_based_auto_wrap_policy).
  int64_t min_num_params = 0;
  // Submodules by path, as named_modules() reports them: "block0", "layers.2".
  std::vector<std::string> module_names;
};

// A policy from text, for command lines and configs: "none" (one unit),
// "type:GptBlockImpl[,LinearImpl...]", "size:<min_num_params>" or
// "name:block0[,block1...]". Throws InvalidArgument quoting the text and the
// accepted forms.
FsdpWrapPolicy parse_fsdp_wrap_policy(const std::string& text);

}  // namespace tandem::parallel
