#include "comm/algorithms/ring.h"

#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
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

void ring_reduce_scatter(RingTransport& transport, int rank, int size, const at::Tensor& output,
                         const at::Tensor& input, ReduceOp op, int tag, const OpContext& ctx) {
  const int64_t n = input.numel();
  if (size == 1) {
    output.copy_(input);
    if (op == ReduceOp::kAvg) finish_average(output, size);
    return;
  }
  // Work on a copy: the caller's input stays untouched.
  at::Tensor acc = input.clone();
  const auto chunk = [&](int c) {
    auto r = shard_range(n, size, c);
    return acc.narrow(0, r.offset, r.numel);
  };
  const int right = (rank + 1) % size;
  const int left = (rank + size - 1) % size;
  auto largest = shard_range(n, size, 0).numel;
  at::Tensor incoming = at::empty({largest}, input.options());
  // Step s: send the partial sum of chunk (rank - s - 1), receive the left
  // neighbour's partial sum of chunk (rank - s - 2) and fold it in. After
  // n - 1 steps this rank holds chunk `rank` reduced over every rank.
  for (int s = 0; s < size - 1; ++s) {
    int send_c = ((rank - s - 1) % size + size) % size;
    int recv_c = ((rank - s - 2) % size + size) % size;
    at::Tensor in = incoming.narrow(0, 0, shard_range(n, size, recv_c).numel);
    transport.send_recv(chunk(send_c), right, in, left, tag, ctx);
    reduce_into(chunk(recv_c), in, op);
  }
  output.copy_(chunk(rank));
  if (op == ReduceOp::kAvg) finish_average(output, size);
}

void ring_all_gather(RingTransport& transport, int rank, int size, const at::Tensor& output,
                     const at::Tensor& input, int tag, const OpContext& ctx) {
  const int64_t n = output.numel();
  const auto chunk = [&](int c) {
    auto r = shard_range(n, size, c);
    return output.narrow(0, r.offset, r.numel);
  };
  chunk(rank).copy_(input);
  const int right = (rank + 1) % size;
  const int left = (rank + size - 1) % size;
  // Step s: pass on chunk (rank - s), receive chunk (rank - s - 1).
  for (int s = 0; s < size - 1; ++s) {
    int send_c = ((rank - s) % size + size) % size;
    int recv_c = ((rank - s - 1) % size + size) % size;
    transport.send_recv(chunk(send_c), right, chunk(recv_c), left, tag, ctx);
  }
}

}  // namespace tandem::detail
