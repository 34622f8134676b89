#include "comm/algorithms/reduce_ops.h"

#include <ATen/ops/div.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/minimum.h>

#include "tandem/core/check.h"

namespace tandem::detail {

void reduce_into(const at::Tensor& acc, const at::Tensor& other, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      acc.add_(other);
      return;
    case ReduceOp::kProduct:
      acc.mul_(other);
      return;
    case ReduceOp::kMin: {
      at::Tensor a = acc;
      at::minimum_out(a, acc, other);
      return;
    }
    case ReduceOp::kMax: {
      at::Tensor a = acc;
      at::maximum_out(a, acc, other);
      return;
    }
  }
  TANDEM_ASSERT(false, "unknown ReduceOp {}", static_cast<int>(op));
}

void finish_average(const at::Tensor& t, int count) {
  if (t.numel() == 0) return;
  if (at::isIntegralType(t.scalar_type(), /*includeBool=*/false)) {
    at::Tensor out = t;
    at::div_out(out, t, count, "trunc");
  } else {
    t.div_(count);
  }
}

}  // namespace tandem::detail
