// SyncBatchNorm: batch normalisation whose batch statistics (mean and
// variance per channel) are computed over every rank's batch, so that N ranks
// with batch B normalise exactly as one process with batch N*B. Parameters
// and buffers have BatchNorm's names (weight, bias, running_mean,
// running_var, num_batches_tracked), so state dicts are interchangeable.
// In training mode forward and backward are collective over the
// communicator (one all-reduce each); in eval mode it is plain BatchNorm
// on the running statistics. Not thread-safe.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <memory>

#include "tandem/comm/communicator.h"

namespace tandem::parallel {

struct SyncBatchNormOptions {
  int64_t num_features = 0;
  double eps = 1e-5;
  double momentum = 0.1;  // weight of the new batch in the running statistics
};

class SyncBatchNormImpl : public torch::nn::Cloneable<SyncBatchNormImpl> {
 public:
  SyncBatchNormImpl(SyncBatchNormOptions options, std::shared_ptr<Communicator> comm);
  void reset() override;
  // x: [N, C, ...] with C == num_features.
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight;
  at::Tensor bias;
  at::Tensor running_mean;
  at::Tensor running_var;
  at::Tensor num_batches_tracked;

 private:
  SyncBatchNormOptions options_;
  std::shared_ptr<Communicator> comm_;
};

TORCH_MODULE(SyncBatchNorm);

// There is no convert_sync_batchnorm: a C++ module calls its children
// through its own members (and Sequential through its own list), so a child
// swapped afterwards would never run. Build the model with SyncBatchNorm in
// place of BatchNorm instead (Tandem's models take a norm-layer option).

}  // namespace tandem::parallel
