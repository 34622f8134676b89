// BucketScheduler: the gradient-ready state machine of the bucketed
// strategies (DistributedDataParallel, ZeroRedundancyOptimizer). Gradient
// hooks mark parameters ready as backward produces them; a bucket is
// launchable once all its parameters are ready, and buckets launch strictly
// in bucket order, whatever order they fill in, so every rank issues the
// same sequence of collectives. At the end of backward the parameters it
// did not reach (unused ones) are taken so the strategy can fill them in.
// Pure logic over a BucketPlan: no communicator, no tensors; the strategy
// does the launching. See Note [Bucket order] in bucket_scheduler.cpp.
//
// Not thread-safe: one backward at a time, driven from the thread running
// it. Nothing here is collective.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tandem/parallel/bucket_plan.h"

namespace tandem::parallel::detail {

class BucketScheduler {
 public:
  BucketScheduler() = default;
  // `plan` says which parameters fill which bucket (its buckets and
  // bucket_of are copied). Starts a fresh iteration.
  explicit BucketScheduler(const BucketPlan& plan);

  // Called by every gradient hook of a synchronised backward, first thing.
  // True for the first call since reset(): the backward has just begun, so
  // the caller queues its end-of-backward work. Counts the backwards begun.
  bool begin_backward();
  // begin_backward() was called since reset(): a backward is under way.
  bool backward_begun() const { return begun_; }
  // Between the first hook of a backward and end_of_hooks().
  bool in_backward() const { return in_backward_; }
  // At the end of backward, before the strategy launches what is left: later
  // launches no longer overlap backward.
  void end_of_hooks() { in_backward_ = false; }
  // Backwards begun since construction (a callback can tell a stale one).
  uint64_t backwards_begun() const { return backwards_; }

  // Marks `param` ready. False if it was ready already in this iteration (a
  // second accumulation, e.g. reentrant backward): nothing changes.
  bool mark_ready(size_t param);
  bool is_ready(size_t param) const { return ready_[param]; }

  // The next bucket to launch, marked launched, if all of its parameters
  // are ready and every earlier bucket was launched; else nullopt. Call it
  // until nullopt after each mark_ready().
  std::optional<size_t> next_launch();
  bool launched(size_t bucket) const { return bucket < next_; }
  // Buckets launched in this iteration: 0 .. launched_count() - 1.
  size_t launched_count() const { return next_; }
  size_t bucket_count() const { return pending_.size(); }
  // True once every bucket was launched.
  bool all_launched() const { return next_ == pending_.size(); }

  // Marks every parameter not yet ready as ready and returns them in index
  // order: what this backward did not reach (unused parameters), for the
  // strategy to fill with zeros or what it accumulated.
  std::vector<size_t> take_unready();

  // A new iteration: nothing ready, nothing launched, no backward begun.
  void reset();

 private:
  std::vector<int64_t> sizes_;     // per bucket: parameter count
  std::vector<size_t> bucket_of_;  // per parameter
  std::vector<int64_t> pending_;   // per bucket: parameters not yet ready
  std::vector<bool> ready_;        // per parameter
  size_t next_ = 0;                // next bucket to launch
  bool begun_ = false;
  bool in_backward_ = false;
  uint64_t backwards_ = 0;
};

// The check at the end of backward: throws InvalidArgument naming `unused`
// (the parameters that got no gradient, by name) unless it is empty or
// `find_unused_parameters` is set, saying which option to set, e.g.
// "rank 1: DistributedDataParallel: parameters a.weight, a.bias got no
// gradient in this backward; ... set DdpOptions::find_unused_parameters ...".
// `owner` is the strategy, `options` its option struct.
void check_no_unused_parameters(int rank, std::string_view owner, std::string_view options,
                                const std::vector<std::string>& unused,
                                bool find_unused_parameters);

}  // namespace tandem::parallel::detail
