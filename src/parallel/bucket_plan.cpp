#include "tandem/parallel/bucket_plan.h"

#include "tandem/core/check.h"

namespace tandem::parallel {

BucketPlan make_bucket_plan(const std::vector<int64_t>& numels,
                            const std::vector<at::ScalarType>& dtypes, int64_t cap_bytes) {
  TANDEM_CHECK(numels.size() == dtypes.size(), "make_bucket_plan: {} sizes but {} dtypes",
               numels.size(), dtypes.size());
  TANDEM_CHECK(cap_bytes >= 1, "make_bucket_plan: the bucket cap must be at least 1 byte (got {})",
               cap_bytes);
  BucketPlan plan;
  plan.bucket_of.resize(numels.size());
  plan.slot_of.resize(numels.size());
  int64_t open_bytes = 0;
  for (size_t k = numels.size(); k-- > 0;) {
    const int64_t bytes = numels[k] * static_cast<int64_t>(c10::elementSize(dtypes[k]));
    bool fits = !plan.buckets.empty() && plan.buckets.back().dtype == dtypes[k] &&
                open_bytes + bytes <= cap_bytes;
    if (!fits) {
      plan.buckets.emplace_back();
      plan.buckets.back().dtype = dtypes[k];
      open_bytes = 0;
    }
    auto& b = plan.buckets.back();
    plan.bucket_of[k] = plan.buckets.size() - 1;
    plan.slot_of[k] = b.params.size();
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += numels[k];
    open_bytes += bytes;
  }
  return plan;
}

BucketPlan make_bucket_plan(const std::vector<at::Tensor>& params, int64_t cap_bytes) {
  std::vector<int64_t> numels;
  std::vector<at::ScalarType> dtypes;
  for (const auto& p : params) {
    numels.push_back(p.numel());
    dtypes.push_back(p.scalar_type());
  }
  return make_bucket_plan(numels, dtypes, cap_bytes);
}

}  // namespace tandem::parallel
