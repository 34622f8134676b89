// `tandem checkpoint`: tools for checkpoint directories written by
// `tandem train` (see include/tandem/train/checkpoint.h and
// sharded_checkpoint.h).
#pragma once

namespace CLI {
class App;
}

namespace tandem::tools {

// Adds `checkpoint consolidate DIR OUT`: folds a sharded checkpoint (DIR is
// a --checkpoint-dir, whose latest is used, or a step-<N> directory) into one
// LibTorch archive that torch::load(module, OUT) reads without Tandem.
void add_checkpoint(CLI::App& app, int& exit_code);

}  // namespace tandem::tools
