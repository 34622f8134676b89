// Note [Hierarchical layout]
// Ranks are numbered host by host (host h holds world ranks h*L .. h*L+L-1,
// as torchrun and mpirun assign them), every host has the same number L of
// local ranks, `local` connects the ranks of one host (shared memory) and
// `cross` connects the ranks with the same local rank across hosts. Then an
// all_reduce is: reduce_scatter within the host (each local rank reduces its
// 1/L slice), all_reduce of that slice across hosts (L cross groups at once,
// each moving 1/L of the bytes), all_gather within the host. Cross-host
// traffic per rank is 1/L of a flat ring's. init() checks the layout and
// falls back to a flat communicator when it does not hold.
#include "comm/algorithms/hierarchical.h"

#include <ATen/ops/empty.h>

#include <algorithm>

#include "comm/algorithms/reduce_ops.h"
#include "tandem/core/check.h"

namespace tandem::detail {

Millis time_left(const OpContext& ctx) { return std::max(ctx.deadline.remaining(), Millis(1)); }

HostPosition host_position(int rank, int local_size) {
  TANDEM_ASSERT(rank >= 0 && local_size >= 1, "host_position({}, {})", rank, local_size);
  return HostPosition{rank / local_size, rank % local_size};
}

ShardRange host_segment(int64_t numel, int hosts, int local_size, int host) {
  const int world = hosts * local_size;
  const ShardRange first = shard_range(numel, world, host * local_size);
  const ShardRange last = shard_range(numel, world, host * local_size + local_size - 1);
  return ShardRange{first.offset, last.offset + last.numel - first.offset};
}

void hierarchical_all_reduce(Communicator& local, Communicator& cross, const at::Tensor& t,
                             ReduceOp op, const OpContext& ctx) {
  const ReduceOp part = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  const ShardRange mine = shard_range(t.numel(), local.size(), local.rank());
  at::Tensor slice = at::empty({mine.numel}, t.options());
  local.reduce_scatter(slice, t, part, time_left(ctx));
  cross.all_reduce(slice, part, time_left(ctx));
  local.all_gather(t, slice, time_left(ctx));
  if (op == ReduceOp::kAvg) finish_average(t, local.size() * cross.size());
}

void hierarchical_broadcast(Communicator& local, Communicator& cross, const at::Tensor& t, int root,
                            const OpContext& ctx) {
  const HostPosition from = host_position(root, local.size());
  if (local.rank() == from.local) cross.broadcast(t, from.host, time_left(ctx));
  local.broadcast(t, from.local, time_left(ctx));
}

void hierarchical_all_gather(Communicator& local, Communicator& cross, const at::Tensor& out,
                             const at::Tensor& in, const OpContext& ctx) {
  const int hosts = cross.size();
  const at::Tensor flat = out.reshape({-1});
  const int64_t n = flat.numel();
  auto segment = [&](int h) { return host_segment(n, hosts, local.size(), h); };
  // Every host's segment padded to the longest (host 0's), so that the
  // cross-host step is an even all_gather.
  const int64_t max_seg = segment(0).numel;
  at::Tensor padded = at::empty({max_seg * hosts}, out.options());
  const int me = cross.rank();
  local.all_gather(padded.narrow(0, me * max_seg, segment(me).numel), in, time_left(ctx));
  // Each cross group gathers every host's whole segment: L times the
  // cross-host bytes of splitting the segments over the L cross groups,
  // but one step simpler. all_reduce, the op training leans on, is optimal.
  at::Tensor block = padded.narrow(0, me * max_seg, max_seg).clone();
  cross.all_gather(padded, block, time_left(ctx));
  for (int h = 0; h < hosts; ++h) {
    const ShardRange s = segment(h);
    flat.narrow(0, s.offset, s.numel).copy_(padded.narrow(0, h * max_seg, s.numel));
  }
}

void hierarchical_reduce_scatter(Communicator& local, Communicator& cross, const at::Tensor& out,
                                 const at::Tensor& in, ReduceOp op, const OpContext& ctx) {
  at::Tensor full = in.reshape({-1}).clone();
  hierarchical_all_reduce(local, cross, full, op, ctx);
  const int world = local.size() * cross.size();
  const int rank = cross.rank() * local.size() + local.rank();
  const ShardRange mine = shard_range(in.numel(), world, rank);
  out.reshape({-1}).copy_(full.narrow(0, mine.offset, mine.numel));
}

}  // namespace tandem::detail
