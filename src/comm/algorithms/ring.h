// Ring reduce-scatter and ring all-gather over point-to-point exchanges, for
// backends that lack them (LibTorch 1.13's Gloo has no reduce_scatter and no
// flat all-gather). Each takes n - 1 steps; every rank sends and receives
// one shard per step, so each moves (n - 1)/n of the data: bandwidth-optimal.
// Shards follow shard_range(), so uneven lengths work.
#pragma once

#include <ATen/core/Tensor.h>

#include "tandem/comm/communicator.h"

namespace tandem::detail {

// What the ring needs from a transport: send `out` to `dst` while receiving
// `in` from `src`, both under `tag`; returns when both finished, or throws by
// ctx.deadline. Empty tensors may be skipped by the implementation only if
// both sides skip them (the ring never passes one side empty, the other not).
class RingTransport {
 public:
  virtual ~RingTransport() = default;
  virtual void send_recv(const at::Tensor& out, int dst, const at::Tensor& in, int src, int tag,
                         const OpContext& ctx) = 0;
};

// Reduces `input` (length L on every rank) and leaves this rank's
// shard_range(L, size, rank) slice in `output`. kAvg divides at the end.
void ring_reduce_scatter(RingTransport& transport, int rank, int size, const at::Tensor& output,
                         const at::Tensor& input, ReduceOp op, int tag, const OpContext& ctx);

// Fills `output` (length L) from every rank's `input` (its shard_range slice).
void ring_all_gather(RingTransport& transport, int rank, int size, const at::Tensor& output,
                     const at::Tensor& input, int tag, const OpContext& ctx);

// acc = op(acc, other), element-wise, for every supported dtype (kAvg sums).
void reduce_into(const at::Tensor& acc, const at::Tensor& other, ReduceOp op);

// Finishes a kAvg sum in place: divides by `count` (truncating for integers).
void finish_average(const at::Tensor& t, int count);

}  // namespace tandem::detail
