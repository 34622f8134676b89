// The models FullyShardedDataParallel's tests shard, with their units.
#pragma once

#include "tandem/parallel/fsdp/wrap_policy.h"
#include "tests/parallel/support/equivalence.h"

namespace tandem::parallel {

// A workload and its units.
struct FsdpCase {
  testing::Workload workload;
  FsdpWrapPolicy policy;
};

// One unit per Linear, of 70, 110 and 33 parameters: unequal shards at 3
// and 4 ranks.
inline FsdpCase mlp_case() {
  FsdpCase c{testing::mlp_workload(10, 3), {}};
  c.policy.module_types = {"LinearImpl"};
  return c;
}

// One unit per block of testing::small_gpt() in float64.
inline FsdpCase gpt_case() {
  FsdpCase c{testing::gpt_workload(testing::small_gpt(), at::kDouble), {}};
  c.policy.module_types = {"GptBlockImpl"};
  return c;
}

}  // namespace tandem::parallel
