// Element-wise reductions over whole tensors with LibTorch's own kernels,
// for the algorithms and backends that reduce outside their transport (the
// rings, the hierarchical composition, Gloo's and MPI's averages). Every
// dtype of communicator.h under every op check_reduce_op() accepts. Pure
// functions on their arguments; thread-compatible.
#pragma once

#include <ATen/core/Tensor.h>

#include "tandem/comm/communicator.h"

namespace tandem::detail {

// acc = op(acc, other), element-wise, in place (kAvg sums: see
// finish_average). `acc` and `other` have the same dtype and length.
void reduce_into(const at::Tensor& acc, const at::Tensor& other, ReduceOp op);

// Finishes a kAvg sum in place: divides by `count`, truncating toward zero
// for integers (as torch.div(..., rounding_mode="trunc")).
void finish_average(const at::Tensor& t, int count);

}  // namespace tandem::detail
