// Element-wise reduction kernels of the shared-memory backend: the reduce
// step of every all_reduce / reduce_scatter. Plain loops over __restrict
// pointers in blocks that stay in L1, so that the compiler vectorises them
// without target-specific flags. Pure functions; thread-safe.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>

#include "tandem/comm/communicator.h"

namespace tandem::comm::detail {

// Reduces `nsrcs` arrays of `count` elements of `dtype` element-wise, in the
// order given (so every rank that reduces the same inputs gets bitwise the
// same result), and writes the result to `dst` and, when not null, `dst2`.
// float16 / bfloat16 accumulate in float and round once; integer sums and
// products wrap around; kAvg divides the sum by `nsrcs` (integers truncate
// toward zero); bool has max (or) and min (and) only, complex dtypes sum,
// avg and product only (others: InternalError; the Communicator rejects them
// first). `dst` may alias one of the sources; `dst2` may not.
void reduce_arrays(at::ScalarType dtype, ReduceOp op, const void* const* srcs, int nsrcs,
                   int64_t count, void* dst, void* dst2);

// Copies `bytes` from `src` to `dst` with non-temporal stores where the CPU
// has them (else memcpy), and fences them, so that a release store after it
// publishes the data to other cores. The areas may not overlap.
void copy_streaming(void* dst, const void* src, size_t bytes);

}  // namespace tandem::comm::detail
