// Capture and restore of LibTorch state through a Checkpoint
// (checkpoint_file.h holds the struct, the file format and its atomic I/O):
// a module's parameters and buffers by name, an optimizer's state, the CPU
// RNG state; and state_digest(), the bitwise fingerprint tests and the
// trainer compare.
// Not collective: with DDP every rank holds the same state, so rank 0 writes
// and every rank reads (the directory must be visible to all ranks).
// Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/ordered_dict.h>

#include <cstdint>
#include <string>

#include "tandem/train/checkpoint_file.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace tandem::train {

// Copies `module`'s parameters and buffers (recursive names) into `ckpt`.
void capture_module(const torch::nn::Module& module, Checkpoint& ckpt);
// XXH3-64 of `module`'s parameters and buffers (kind, recursive name, dtype,
// shape and bytes, in registration order). Two replicas hold bitwise the same
// state exactly when their digests match (barring a 1-in-2^64 collision);
// tests use it to compare ranks and runs. Not collective.
uint64_t state_digest(const torch::nn::Module& module);
// The same digest from parameters and buffers given by name (for strategies
// whose module does not hold its parameters between steps, e.g. zero3).
uint64_t state_digest(const torch::OrderedDict<std::string, at::Tensor>& parameters,
                      const torch::OrderedDict<std::string, at::Tensor>& buffers);
// Serializes `optimizer`'s state into ckpt.optimizer_state.
void capture_optimizer(torch::optim::Optimizer& optimizer, Checkpoint& ckpt);
// Stores the default CPU generator's state.
void capture_rng(Checkpoint& ckpt);

// Throws CheckpointError unless the checkpoint was written at `world_size`.
void check_world_size(const Checkpoint& ckpt, int world_size);

// Copies the checkpoint's parameters and buffers into `module` after checking
// that the names, shapes and dtypes are exactly the module's (CheckpointError
// naming the file and the first differing tensor).
void restore_module(const Checkpoint& ckpt, torch::nn::Module& module);
// Copies the checkpoint's buffers into `module` (a sharded checkpoint's,
// which rank 0's file holds), checking names and shapes (CheckpointError
// naming the file and the buffer).
void restore_buffers(const Checkpoint& ckpt, torch::nn::Module& module);
// Loads ckpt.optimizer_state into `optimizer` (built over the same
// parameters, in the same order).
void restore_optimizer(const Checkpoint& ckpt, torch::optim::Optimizer& optimizer);
// Restores the default CPU generator's state, if the checkpoint has one.
void restore_rng(const Checkpoint& ckpt);

}  // namespace tandem::train
