#include "parallel/detail/bucket_scheduler.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "tandem/core/check.h"

namespace tandem::parallel::detail {

// Note [Bucket order]
// A bucket is launched only when it is next in bucket order, not when it
// fills: gradients arrive in an order that depends on the autograd graph
// and, with several threads, on timing, and two ranks that issued their
// collectives in different orders would pair bucket 1 of one with bucket 2
// of the other (or hang). The plan puts the last layers' gradients, which
// backward produces first, in bucket 0, so in-order launch rarely waits.

BucketScheduler::BucketScheduler(const BucketPlan& plan) : bucket_of_(plan.bucket_of) {
  for (const auto& b : plan.buckets) sizes_.push_back(static_cast<int64_t>(b.params.size()));
  reset();
}

bool BucketScheduler::begin_backward() {
  if (begun_) return false;
  begun_ = true;
  in_backward_ = true;
  ++backwards_;
  return true;
}

bool BucketScheduler::mark_ready(size_t param) {
  if (ready_[param]) return false;
  ready_[param] = true;
  --pending_[bucket_of_[param]];
  return true;
}

std::optional<size_t> BucketScheduler::next_launch() {
  if (next_ == pending_.size() || pending_[next_] != 0) return std::nullopt;
  return next_++;
}

std::vector<size_t> BucketScheduler::take_unready() {
  std::vector<size_t> taken;
  for (size_t i = 0; i < ready_.size(); ++i) {
    if (mark_ready(i)) taken.push_back(i);
  }
  return taken;
}

void BucketScheduler::reset() {
  pending_ = sizes_;
  ready_.assign(bucket_of_.size(), false);
  next_ = 0;
  begun_ = false;
  in_backward_ = false;
}

void check_no_unused_parameters(int rank, std::string_view owner, std::string_view options,
                                const std::vector<std::string>& unused,
                                bool find_unused_parameters) {
  TANDEM_CHECK(unused.empty() || find_unused_parameters,
               "rank {}: {}: parameter{} {} got no gradient in this backward; if some parameters "
               "are unused in some iterations, set {}::find_unused_parameters (they then "
               "contribute zeros), or freeze them with requires_grad(false)",
               rank, owner, unused.size() == 1 ? "" : "s", fmt::join(unused, ", "), options);
}

}  // namespace tandem::parallel::detail
