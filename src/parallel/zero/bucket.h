// ZeroRedundancyOptimizer's per-bucket state, shared by its .cpp files:
// zero_optimizer.cpp (construction, access, memory), zero_backward.cpp
// (the gradient hooks and the end of backward) and zero_step.cpp (step,
// zero_grad, clipping).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "tandem/comm/work.h"
#include "tandem/core/trace.h"
#include "tandem/parallel/zero/zero_optimizer.h"

namespace tandem::parallel {

// One bucket's tensors. Stage 1: `grads` is the permanent flat gradient
// buffer and grad_shard a view of it. Stage 2: `grads` is the staging buffer
// of one backward (allocated at the bucket's first gradient, released once
// its reduce-scatter is done) and grad_shard the rank's own tensor.
struct ZeroRedundancyOptimizer::Bucket {
  ShardRange shard;
  at::Tensor params;       // flat parameter buffer; the parameters alias it
  at::Tensor param_shard;  // alias of params over `shard`
  std::vector<at::Tensor> pieces;  // param_shard cut for the inner optimizer
  at::Tensor grads;
  at::Tensor grad_shard;
  at::Tensor received;        // stage 2: reduce-scatter output when grad_shard already holds a sum
  bool shard_is_zero = true;  // stage 2: the reduce-scatter may overwrite grad_shard
  std::shared_ptr<Work> work;
  TraceRecorder::TimePoint launched_at;
};

namespace detail {

// True if `grad` is exactly the tensor `alias` describes (same memory, shape).
inline bool same_memory(const at::Tensor& grad, const at::Tensor& alias) {
  return grad.defined() && grad.is_alias_of(alias) && grad.data_ptr() == alias.data_ptr() &&
         grad.sizes() == alias.sizes() && grad.strides() == alias.strides();
}

}  // namespace detail

}  // namespace tandem::parallel
