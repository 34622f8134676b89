// FullyShardedDataParallel's per-unit state and the storage helpers shared by
// its .cpp files: fully_sharded_data_parallel.cpp (construction, sharding),
// fsdp_gather.cpp (gathering and freeing a unit's parameters),
// fsdp_gradients.cpp (reduce-scattering its gradients) and fsdp_state.cpp
// (state dicts, clipping, memory).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/StorageImpl.h>

#include <chrono>
#include <memory>
#include <vector>

#include "tandem/comm/work.h"
#include "tandem/core/trace.h"
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"

namespace tandem::parallel {

struct FullyShardedDataParallel::Unit {
  std::vector<size_t> params;  // parameter indices, in slot (layout) order
  at::Tensor shard;            // leaf that requires grad: the optimizer's parameter
  at::Tensor shard_data;       // shard.detach(): what collectives read
  at::Tensor full;             // alias of the flat storage, not the parameters' base
  c10::StorageImpl* storage = nullptr;
  at::Allocator* allocator = nullptr;
  size_t full_bytes = 0;
  State state = State::kFreed;
  std::shared_ptr<Work> gather;
  TraceRecorder::TimePoint gather_launched;
  bool prefetched = false;
  at::Tensor grad_full;       // full flat gradient, while held
  std::vector<bool> written;  // per slot: grad_full holds its gradient
  std::vector<bool> ready;    // per slot: got its gradient in this backward
  size_t pending = 0;         // slots not yet ready in this backward
  std::shared_ptr<Work> reduce;
  TraceRecorder::TimePoint reduce_launched;
};

namespace detail {

using Clock = std::chrono::steady_clock;

// See Note [Gather on first touch]. The parameters' version counters never
// move: writes go through Unit::full, and freeing only swaps the data pointer.
inline void free_storage(c10::StorageImpl* s) {
  s->set_data_ptr_noswap(at::DataPtr(nullptr, s->device()));
  s->set_nbytes(0);
}

inline void allocate_storage(c10::StorageImpl* s, at::Allocator* allocator, size_t nbytes) {
  s->set_data_ptr_noswap(allocator->allocate(nbytes));
  s->set_nbytes(nbytes);
}

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace detail
}  // namespace tandem::parallel
