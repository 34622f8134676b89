// ZeroRedundancyOptimizer during backward: the gradient hooks stage each
// gradient where its bucket's collective reads it, launch the buckets in
// order (the bucket scheduler DDP shares) and, at the end of backward, wait
// for them. Construction and access are in zero_optimizer.cpp.
#include <ATen/ops/empty.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include <chrono>
#include <optional>

#include "parallel/detail/bucket_scheduler.h"
#include "parallel/detail/grad_hooks.h"
#include "parallel/detail/replicas.h"
#include "parallel/zero/bucket.h"
#include "tandem/core/check.h"
#include "tandem/parallel/zero/zero_optimizer.h"

namespace tandem::parallel {

using detail::same_memory;

void ZeroRedundancyOptimizer::reset_iteration() {
  scheduler_->reset();
  oldest_in_flight_ = 0;
  deferred_error_.clear();
}

// After a failure: forget what is in flight (each Work keeps its tensors
// alive and ends by its deadline) and drop the staging buffers.
void ZeroRedundancyOptimizer::abandon_iteration() {
  for (auto& b : buckets_) {
    b.work.reset();
    if (options_.stage == 2) {
      b.grads = at::Tensor();
      b.received = at::Tensor();
    }
  }
  reset_iteration();
}

// ---- backward: see Note [ZeRO gradient hooks] ----

// Note [ZeRO gradient hooks]
// The hook runs after autograd has accumulated params[i].grad (backward runs
// with grad mode off, so an existing .grad is added to in place).
//  - Stage 1: .grad is an alias of the bucket gradient buffer, so there is
//    nothing to copy. If the caller replaced it (module->zero_grad(true),
//    create_graph), the hook copies it into the buffer and re-aliases .grad.
//  - Stage 2: the hook copies .grad into the bucket's staging buffer and
//    resets .grad to undefined. Resetting (not freeing its storage) is what
//    stops autograd accumulating into a released tensor: the next backward
//    finds no .grad and hands over a fresh one. Under no_sync the hook does
//    nothing, so .grad accumulates at full size until the next synchronised
//    backward copies the sum.
// Buckets launch strictly in bucket order, whatever order they fill in, so
// every rank issues the same collectives (Note [Bucket order] in
// bucket_scheduler.cpp).
void ZeroRedundancyOptimizer::mark_ready(size_t param) {
  if (!sync_enabled_) return;
  try {
    if (scheduler_->begin_backward()) begin_backward();
    if (!scheduler_->mark_ready(param)) {
      mark_again(param);
      return;
    }
    stage_gradient(param, /*add=*/false);
    launch_ready_buckets();
  } catch (...) {
    abandon_iteration();  // autograd will not run the end-of-backward callback
    throw;
  }
}

// The first gradient of a synchronised backward.
void ZeroRedundancyOptimizer::begin_backward() {
  stats_.buckets_launched_during_backward = 0;
  stats_.wait_seconds = 0;
  first_hook_at_ = std::chrono::steady_clock::now();
  const uint64_t backward = scheduler_->backwards_begun();
  detail::at_end_of_backward([this, backward] { finish_backward(backward); });
  memory_.at(memory::MemoryPoint::kBackwardBegins);
}

// A second accumulation in one backward (reentrant backward): added while
// its bucket waits, an error once the bucket is being reduced.
void ZeroRedundancyOptimizer::mark_again(size_t param) {
  const size_t b = plan_.bucket_of[param];
  if (!scheduler_->launched(b)) {
    stage_gradient(param, /*add=*/true);
  } else if (deferred_error_.empty()) {
    deferred_error_ = fmt::format(
        "rank {}: ZeroRedundancyOptimizer: the gradient of '{}' arrived twice in one "
        "backward, after its bucket {} was already being reduced; reentrant backward "
        "(e.g. activation checkpointing) is not supported",
        comm_->rank(), names_[param], b);
  }
}

// Puts params[param]'s gradient where its bucket's collective reads it (see
// Note [ZeRO gradient hooks]). A missing .grad counts as zeros.
void ZeroRedundancyOptimizer::stage_gradient(size_t param, bool add) {
  at::NoGradGuard no_grad;
  at::Tensor& grad = params_[param].mutable_grad();
  if (options_.stage == 1) {
    const at::Tensor& view = grad_views_[param];
    if (!grad.defined()) {
      view.zero_();
      grad = view;
    } else if (!same_memory(grad, view)) {
      view.copy_(grad);
      grad = view;
    }
    return;
  }
  const size_t b = plan_.bucket_of[param];
  Bucket& bucket = buckets_[b];
  const FlatLayout::Entry& e = layouts_[b].entries[plan_.slot_of[param]];
  if (!bucket.grads.defined()) {
    bucket.grads = at::empty({layouts_[b].numel}, at::TensorOptions().dtype(layouts_[b].dtype));
    memory_.at(memory::MemoryPoint::kGradientBufferAllocated);  // beside activations and .grad
  }
  at::Tensor slot = bucket.grads.narrow(0, e.offset, e.numel);
  if (!grad.defined()) {
    if (!add) slot.zero_();
  } else if (add) {
    slot.add_(grad.reshape({-1}));
  } else {
    slot.copy_(grad.reshape({-1}));
  }
  grad.reset();
}

void ZeroRedundancyOptimizer::launch_ready_buckets() {
  while (std::optional<size_t> b = scheduler_->next_launch()) launch_bucket(*b);
}

void ZeroRedundancyOptimizer::launch_bucket(size_t b) {
  Bucket& bucket = buckets_[b];
  if (options_.stage == 2) throttle_in_flight(kMaxReduceScattersInFlight - 1, b);
  // Stamped before the launch: a small collective can finish before the call returns.
  if (options_.trace) bucket.launched_at = std::chrono::steady_clock::now();
  if (options_.stage == 1) {
    bucket.work = comm_->all_reduce_async(bucket.grads, ReduceOp::kAvg, options_.timeout);
  } else {
    at::Tensor out = bucket.grad_shard;
    if (!bucket.shard_is_zero) {
      bucket.received = at::empty({bucket.shard.numel}, bucket.grad_shard.options());
      out = bucket.received;
    }
    bucket.work = comm_->reduce_scatter_async(out, bucket.grads, ReduceOp::kAvg, options_.timeout);
  }
  if (scheduler_->in_backward()) {
    ++stats_.buckets_launched_during_backward;
    // The transient peak: staging buffers and live .grad.
    memory_.at(memory::MemoryPoint::kGradientCollectiveLaunched);
  }
}

// Before bucket `launching` launches: finishes the buckets launched before
// it, oldest first, every completed one and more until at most `limit` are
// in flight.
void ZeroRedundancyOptimizer::throttle_in_flight(size_t limit, size_t launching) {
  while (oldest_in_flight_ < launching) {
    if (launching - oldest_in_flight_ <= limit &&
        !buckets_[oldest_in_flight_].work->is_completed()) {
      break;
    }
    finish_launched(oldest_in_flight_++);
  }
}

void ZeroRedundancyOptimizer::finish_launched(size_t b) {
  Bucket& bucket = buckets_[b];
  TANDEM_ASSERT(bucket.work != nullptr, "bucket {} was never launched", b);
  bucket.work->wait(wait_timeout());
  if (options_.trace) {
    options_.trace->span(
        fmt::format("{} bucket {}", options_.stage == 1 ? "all_reduce" : "reduce_scatter", b),
        "comm", bucket.launched_at, bucket.work->finished_at());
  }
  bucket.work.reset();
  if (options_.stage == 2) {
    at::NoGradGuard no_grad;
    if (bucket.received.defined()) bucket.grad_shard.add_(bucket.received);
    bucket.received = at::Tensor();
    bucket.grads = at::Tensor();  // the staging buffer goes back to the allocator
    bucket.shard_is_zero = false;
  }
}

// Parameters this backward did not reach: they contribute their .grad (from
// no_sync passes) or zeros. Returns their names.
std::vector<std::string> ZeroRedundancyOptimizer::fill_unready() {
  std::vector<std::string> unused;
  for (size_t i : scheduler_->take_unready()) {
    unused.push_back(names_[i]);
    stage_gradient(i, /*add=*/false);
  }
  return unused;
}

void ZeroRedundancyOptimizer::finish_backward(uint64_t backward) {
  // That backward already failed (and the iteration was abandoned).
  if (backward != scheduler_->backwards_begun() || !scheduler_->backward_begun()) return;
  try {
    scheduler_->end_of_hooks();
    detail::check_no_unused_parameters(comm_->rank(), "ZeroRedundancyOptimizer", "ZeroOptions",
                                       fill_unready(), options_.find_unused_parameters);
    TANDEM_CHECK(deferred_error_.empty(), "{}", deferred_error_);
    const auto hooks_end = std::chrono::steady_clock::now();
    launch_ready_buckets();
    const auto start = std::chrono::steady_clock::now();
    const size_t launched = scheduler_->launched_count();
    while (oldest_in_flight_ < launched) finish_launched(oldest_in_flight_++);
    TANDEM_ASSERT(scheduler_->all_launched(), "only {} of {} buckets were launched", launched,
                  buckets_.size());
    const auto waited = std::chrono::steady_clock::now();
    stats_.wait_seconds = std::chrono::duration<double>(waited - start).count();
    if (options_.trace) {
      options_.trace->span("backward (hooks)", "compute", first_hook_at_, hooks_end);
      options_.trace->span("wait for gradients", "compute", start, waited);
    }
    if (options_.broadcast_buffers) {
      detail::broadcast_buffers_from_rank0(*comm_, *module_, options_.timeout,
                                           "ZeroRedundancyOptimizer");
    }
    memory_.at(memory::MemoryPoint::kBackwardEnds);
  } catch (...) {
    abandon_iteration();
    throw;
  }
  reset_iteration();
}

}  // namespace tandem::parallel
