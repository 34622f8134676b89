// What ZeroRedundancyOptimizer's tests share: a communicator, the factory
// of the inner optimizer, and the small buckets that cut the MLP of
// testing::mlp_workload() into three, with shards crossing parameters.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tandem/parallel/zero/zero_optimizer.h"
#include "tests/parallel/support/equivalence.h"

namespace tandem::parallel {

// 1200 bytes of float64: buckets [fc3.bias, fc3.weight, fc2.bias] (51),
// [fc2.weight] (144), [fc1.bias, fc1.weight] (84).
inline constexpr double kSmallCapMb = 1200.0 / (1024 * 1024);

inline std::shared_ptr<Communicator> zero_connect(int rank, int size, int port) {
  return testing::connect(testing::Backend::kShm, rank, size, port, "zero");
}

inline OptimizerFactory factory(testing::Opt opt) {
  return [opt](std::vector<at::Tensor> p) { return testing::make_optimizer(opt, std::move(p)); };
}

inline ZeroOptions small_buckets(int stage) {
  ZeroOptions o;
  o.stage = stage;
  o.bucket_cap_mb = kSmallCapMb;
  return o;
}

}  // namespace tandem::parallel
