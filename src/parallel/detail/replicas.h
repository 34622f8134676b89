// Start-of-training checks and copies shared by the data-parallel
// strategies (DDP, ZeRO, FSDP): every rank must have built the same model,
// and every rank starts from rank 0's values.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tandem/comm/communicator.h"

namespace torch::nn {
class Module;
}

namespace tandem::parallel::detail {

// The parameters a strategy synchronises: those of `module` that require
// grad (frozen ones stay as they are), by full name, in registration order.
struct Trainable {
  std::vector<std::string> names;
  std::vector<at::Tensor> params;
};

// Local. Throws InvalidArgument naming `who`, the first parameter not on
// the CPU and its device: "...; this build `does` CPU tensors".
Trainable trainable_parameters(const torch::nn::Module& module, std::string_view who,
                               std::string_view does);

// Collective. Compares every rank's (name, dtype, shape) per parameter with
// rank 0's; all ranks throw the same InvalidArgument naming the first
// difference, the rank and `who` (e.g. "DistributedDataParallel").
void check_replicas_match(Communicator& comm, const std::vector<std::string>& names,
                          const std::vector<at::Tensor>& params, std::string_view who);

// Collective. Overwrites the tensors with rank 0's values (empty ones skipped).
void broadcast_from_rank0(Communicator& comm, const std::vector<at::Tensor>& tensors,
                          std::optional<Millis> timeout);

// Collective. Overwrites every buffer of `module` (recursively) with rank 0's
// values, whatever its dtype (a bool mask, uint8 counters, ...) and layout,
// in one broadcast of them all packed as bytes.
// A buffer that cannot move (sparse, not on the CPU) is an InvalidArgument
// naming it and `who`.
void broadcast_buffers_from_rank0(Communicator& comm, const torch::nn::Module& module,
                                  std::optional<Millis> timeout, std::string_view who);

}  // namespace tandem::parallel::detail
