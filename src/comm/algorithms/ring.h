// Ring reduce-scatter and ring all-gather over point-to-point exchanges, for
// backends that lack them (LibTorch 1.13's Gloo has no reduce_scatter and no
// flat all-gather). Each takes n - 1 steps; every rank sends and receives
// one shard per step, so each moves (n - 1)/n of the data: bandwidth-optimal.
// Shards follow shard_range(), so uneven lengths work. Which shard moves
// where at each step is a pure function (ring_*_step), tested on its own.
// Collective over the transport's ranks; thread-compatible.
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

// One step of a ring on `rank`: the shard it sends to its right neighbour
// (rank + 1) and the shard it receives from its left one (rank - 1), which
// sends that very shard in the same step.
struct RingStep {
  int send_shard = 0;
  int recv_shard = 0;
};

// Step `step` in [0, size - 1) of the reduce-scatter: the received shard is
// folded into this rank's partial result, so that after size - 1 steps
// shard `rank` holds the reduction over every rank. Pure.
RingStep ring_reduce_scatter_step(int rank, int size, int step);

// Step `step` in [0, size - 1) of the all-gather: each rank passes on the
// shard it received in the step before (its own first). Pure.
RingStep ring_all_gather_step(int rank, int size, int step);

// Reduces `input` (length L on every rank) and leaves this rank's
// shard_range(L, size, rank) slice in `output`. kAvg divides at the end.
// Tensors of any shape count as their flat element order.
void ring_reduce_scatter(RingTransport& transport, int rank, int size, const at::Tensor& output,
                         const at::Tensor& input, ReduceOp op, int tag, const OpContext& ctx);

// Fills `output` (length L) from every rank's `input` (its shard_range slice).
void ring_all_gather(RingTransport& transport, int rank, int size, const at::Tensor& output,
                     const at::Tensor& input, int tag, const OpContext& ctx);

}  // namespace tandem::detail
