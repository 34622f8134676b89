#include "comm/algorithms/ring.h"

#include <ATen/ops/empty.h>

#include "comm/algorithms/reduce_ops.h"
#include "tandem/core/check.h"

namespace tandem::detail {
namespace {

int wrap(int i, int size) { return ((i % size) + size) % size; }

}  // namespace

RingStep ring_reduce_scatter_step(int rank, int size, int step) {
  TANDEM_ASSERT(size >= 1 && rank >= 0 && rank < size && step >= 0 && step < size - 1,
                "ring step {} of rank {} among {}", step, rank, size);
  // Send the partial result of shard (rank - step - 1), receive the left
  // neighbour's partial result of shard (rank - step - 2).
  return RingStep{wrap(rank - step - 1, size), wrap(rank - step - 2, size)};
}

RingStep ring_all_gather_step(int rank, int size, int step) {
  TANDEM_ASSERT(size >= 1 && rank >= 0 && rank < size && step >= 0 && step < size - 1,
                "ring step {} of rank {} among {}", step, rank, size);
  // Pass on shard (rank - step), receive shard (rank - step - 1).
  return RingStep{wrap(rank - step, size), wrap(rank - step - 1, size)};
}

void ring_reduce_scatter(RingTransport& transport, int rank, int size, const at::Tensor& output,
                         const at::Tensor& input, ReduceOp op, int tag, const OpContext& ctx) {
  const int64_t n = input.numel();
  const at::Tensor out = output.reshape({-1});
  if (size == 1) {
    out.copy_(input.reshape({-1}));
    if (op == ReduceOp::kAvg) finish_average(out, size);
    return;
  }
  // Work on a copy: the caller's input stays untouched.
  at::Tensor acc = input.reshape({-1}).clone();
  const auto shard = [&](int c) {
    auto r = shard_range(n, size, c);
    return acc.narrow(0, r.offset, r.numel);
  };
  const int right = (rank + 1) % size;
  const int left = (rank + size - 1) % size;
  at::Tensor incoming = at::empty({shard_range(n, size, 0).numel}, input.options());
  for (int s = 0; s < size - 1; ++s) {
    const RingStep step = ring_reduce_scatter_step(rank, size, s);
    at::Tensor in = incoming.narrow(0, 0, shard_range(n, size, step.recv_shard).numel);
    transport.send_recv(shard(step.send_shard), right, in, left, tag, ctx);
    reduce_into(shard(step.recv_shard), in, op);
  }
  out.copy_(shard(rank));
  if (op == ReduceOp::kAvg) finish_average(out, size);
}

void ring_all_gather(RingTransport& transport, int rank, int size, const at::Tensor& output,
                     const at::Tensor& input, int tag, const OpContext& ctx) {
  const at::Tensor out = output.reshape({-1});
  const int64_t n = out.numel();
  const auto shard = [&](int c) {
    auto r = shard_range(n, size, c);
    return out.narrow(0, r.offset, r.numel);
  };
  shard(rank).copy_(input.reshape({-1}));
  const int right = (rank + 1) % size;
  const int left = (rank + size - 1) % size;
  for (int s = 0; s < size - 1; ++s) {
    const RingStep step = ring_all_gather_step(rank, size, s);
    transport.send_recv(shard(step.send_shard), right, shard(step.recv_shard), left, tag, ctx);
  }
}

}  // namespace tandem::detail
