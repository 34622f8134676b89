// BucketPlan: how DistributedDataParallel groups gradients into flat buckets.
// Pure logic, no communicator: parameters are taken in reverse registration
// order (gradients of the last layers are ready first during backward) and
// packed into buckets of at most `cap_bytes`; a bucket never mixes dtypes,
// and a parameter larger than the cap gets a bucket of its own.
// Thread-compatible value type.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace tandem::parallel {

struct BucketPlan {
  struct Bucket {
    std::vector<size_t> params;    // parameter indices, in the order they fill the bucket
    std::vector<int64_t> offsets;  // element offset of each parameter in the flat buffer
    int64_t numel = 0;
    at::ScalarType dtype = at::kFloat;
  };
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;  // parameter index -> bucket index
  std::vector<size_t> slot_of;    // parameter index -> position within its bucket
};

// Builds the plan for parameters of the given element counts and dtypes.
// Throws InvalidArgument if the lists differ in length or cap_bytes < 1.
BucketPlan make_bucket_plan(const std::vector<int64_t>& numels,
                            const std::vector<at::ScalarType>& dtypes, int64_t cap_bytes);
// The same for these tensors' element counts and dtypes.
BucketPlan make_bucket_plan(const std::vector<at::Tensor>& params, int64_t cap_bytes);

}  // namespace tandem::parallel
