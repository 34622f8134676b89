// LocalSgd: local SGD (also "periodic model averaging", Stich 2019; Lin et
// al. 2020): every worker steps its own copy of the model, and every
// `sync_every` steps the workers all-reduce-average their parameters (and
// floating-point buffers, such as BatchNorm running statistics). With
// sync_every = 1 and SGD (with or without momentum) this is exactly
// synchronous data parallelism, since averaging is linear.
//
// Also consensus_distance(), the spread of the workers' parameters, which
// gossip and elastic averaging report too.
//
// Collective: after_step() on every rank, once per step, in the same order.
// Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "tandem/comm/communicator.h"

namespace torch::nn {
class Module;
}

namespace tandem::parallel {

// Collective. The mean over ranks of ||x_r - mean_r x_r||_2, where x_r is
// rank r's parameters flattened (optionally weighted: with `weight`, the
// mean is sum_r w_r x_r / sum_r w_r, as push-sum gossip keeps it). Blocks
// under the communicator's timeout.
double consensus_distance(Communicator& comm, const std::vector<at::Tensor>& params,
                          double weight = 1.0);

class LocalSgd {
 public:
  // Broadcasts rank 0's parameters and buffers so every worker starts equal.
  // Throws InvalidArgument unless sync_every >= 1.
  LocalSgd(std::shared_ptr<torch::nn::Module> module, std::shared_ptr<Communicator> comm,
           int64_t sync_every);

  // Collective. Call after each local optimizer step; every sync_every-th
  // call measures the consensus distance and averages. Returns true then.
  bool after_step();
  // The consensus distance measured at the last average, before it (0 until then).
  double last_consensus_distance() const { return last_distance_; }
  int64_t averages() const { return averages_; }

 private:
  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<Communicator> comm_;
  const int64_t sync_every_;
  int64_t steps_ = 0;
  int64_t averages_ = 0;
  double last_distance_ = 0;
};

}  // namespace tandem::parallel
