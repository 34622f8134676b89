// FullyShardedDataParallel's per-unit state, shared by its two .cpp files
// (the gather/reduce machinery, and state dicts and memory).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/StorageImpl.h>

#include <memory>
#include <vector>

#include "tandem/comm/work.h"
#include "tandem/core/trace.h"
#include "tandem/parallel/fully_sharded_data_parallel.h"

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

}  // namespace tandem::parallel
