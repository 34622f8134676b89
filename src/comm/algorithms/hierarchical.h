// The hierarchical composition: collectives of a world of H hosts x L local
// ranks built from a communicator among the ranks of one host (`local`) and
// one among the ranks of equal local rank across hosts (`cross`). See Note
// [Hierarchical layout] in hierarchical.cpp. The parts are the transports;
// the layout math (which slice is whose, where a root sits) is pure and
// tested on its own. Collective over the world: every rank calls each
// function in the same order; each part call is bounded by what is left of
// ctx.deadline. Thread-compatible.
#pragma once

#include <ATen/core/Tensor.h>

#include "tandem/comm/communicator.h"

namespace tandem::detail {

// Where world rank `rank` sits: host `host` (its cross rank), local rank
// `local` (its local rank). Ranks are numbered host by host.
struct HostPosition {
  int host = 0;
  int local = 0;
};

// What is left of the operation's deadline (at least 1 ms), as the timeout
// of the part call made next.
Millis time_left(const OpContext& ctx);

// The position of world rank `rank` among hosts of `local_size` ranks. Pure.
HostPosition host_position(int rank, int local_size);

// The elements host `host` owns of a length-`numel` vector under the
// world's shard_range over `hosts` x `local_size` ranks: its ranks' slices,
// which are contiguous. shard_range(segment.numel, local_size, l) then gives
// local rank l's slice within it (the ranks with one extra element come
// first in both). Pure.
ShardRange host_segment(int64_t numel, int hosts, int local_size, int host);

// all_reduce: reduce-scatter within the host, all_reduce of this rank's
// slice across hosts, all-gather within the host. kAvg sums until the end,
// so integer truncation happens once.
void hierarchical_all_reduce(Communicator& local, Communicator& cross, const at::Tensor& t,
                             ReduceOp op, const OpContext& ctx);

// broadcast from world rank `root`: across hosts within the root's cross
// group, then within every host from the rank at the root's local index.
void hierarchical_broadcast(Communicator& local, Communicator& cross, const at::Tensor& t, int root,
                            const OpContext& ctx);

// all_gather (shard_range layout of the world): within the host into the
// host's segment, then every host's segment across hosts.
void hierarchical_all_gather(Communicator& local, Communicator& cross, const at::Tensor& out,
                             const at::Tensor& in, const OpContext& ctx);

// reduce_scatter: a full hierarchical_all_reduce of a copy, then this rank's
// slice (twice the bytes of a true hierarchical reduce-scatter, but correct
// for every layout).
void hierarchical_reduce_scatter(Communicator& local, Communicator& cross, const at::Tensor& out,
                                 const at::Tensor& in, ReduceOp op, const OpContext& ctx);

}  // namespace tandem::detail
