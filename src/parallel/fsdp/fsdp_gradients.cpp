// FullyShardedDataParallel's gradients: each parameter's gradient goes into
// its unit's full flat gradient as backward produces it; a complete unit is
// reduce-scattered (averaged) into its gradient shard, in a fixed unit
// order on the gradient communicator; the end of backward waits for them.
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include <algorithm>

#include "parallel/detail/bucket_scheduler.h"
#include "parallel/detail/grad_hooks.h"
#include "parallel/detail/replicas.h"
#include "parallel/fsdp/storage_touch_observer.h"
#include "parallel/fsdp/unit.h"
#include "tandem/core/log.h"
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"

namespace tandem::parallel {

using detail::Clock;
using detail::free_storage;
using detail::seconds_since;
using detail::StorageTouchObserver;

void FullyShardedDataParallel::grad_ready(size_t param) {
  StorageTouchObserver::Pause pause;
  if (failure_) {
    abandon_iteration();  // backward stops here; its final callback will not run
    rethrow_failure();
  }
  if (!in_backward_) {
    in_backward_ = true;
    detail::at_end_of_backward([this] { finish_backward(); });
  }
  Unit& unit = *state_[unit_of_[param]];
  const size_t slot = slot_of_[param];
  at::Tensor grad = params_[param].grad();
  if (!grad.defined()) return;
  const FlatLayout::Entry& entry = units_[unit_of_[param]].layout.entries[slot];
  if (!unit.grad_full.defined()) {
    // Without overlap, a unit's full gradients wait for the previous unit's
    // to leave (its reduce-scatter to finish).
    if (!options_.overlap_reduce_scatter) reap_reduce_scatters(/*wait=*/true);
    unit.grad_full = at::empty({units_[unit_of_[param]].layout.numel}, grad.options());
    std::fill(unit.written.begin(), unit.written.end(), false);
    memory_.at(memory::MemoryPoint::kGradientBufferAllocated);
  }
  at::Tensor dst = unit.grad_full.narrow(0, entry.offset, entry.numel);
  if (unit.written[slot]) {
    dst.add_(grad.reshape({-1}));
  } else {
    dst.copy_(grad.reshape({-1}));
    unit.written[slot] = true;
  }
  params_[param].mutable_grad() = at::Tensor();  // the flat buffer holds it now
  if (!unit.ready[slot]) {
    unit.ready[slot] = true;
    if (--unit.pending == 0 && sync_enabled_) launch_reduce_scatters();
  }
  reap_reduce_scatters(/*wait=*/false);
}

// Units launch in reduce_order_ only, whatever order they complete in, so
// every rank issues the same reduce-scatters on grad_comm_. One is in flight
// at a time: the previous one had the current unit's whole backward to
// finish, and waiting for it bounds the full gradients held to two units
// (the one reduced and the one accumulating; one without overlap) plus
// those of units completing out of order (the root unit).
void FullyShardedDataParallel::launch_reduce_scatters() {
  while (next_reduce_ < reduce_order_.size() && state_[reduce_order_[next_reduce_]]->pending == 0) {
    reap_reduce_scatters(/*wait=*/true);
    const size_t u = reduce_order_[next_reduce_++];
    Unit& unit = *state_[u];
    const FlatLayout& layout = units_[u].layout;
    if (!unit.grad_full.defined()) {
      unit.grad_full = at::zeros({layout.numel}, unit.shard.options().requires_grad(false));
    } else {
      for (size_t k = 0; k < unit.written.size(); ++k) {
        if (!unit.written[k]) {
          unit.grad_full.narrow(0, layout.entries[k].offset, layout.entries[k].numel).zero_();
        }
      }
    }
    // The reduce-scatter writes the shard's .grad directly. It averages, so
    // adding N times the gradient the shard already holds to this rank's own
    // range (the one it receives) yields new average + held, as autograd
    // accumulates; no temporary shard.
    at::NoGradGuard no_grad;
    at::Tensor& held = unit.shard.mutable_grad();
    const ShardRange mine = units_[u].shard;
    if (held.defined()) {
      unit.grad_full.narrow(0, mine.offset, mine.numel).add_(held, comm_->size());
    } else {
      held = at::empty({mine.numel}, unit.grad_full.options());
    }
    unit.reduce_launched = Clock::now();
    unit.reduce =
        grad_comm_->reduce_scatter_async(held, unit.grad_full, ReduceOp::kAvg, options_.timeout);
    in_flight_reduces_.push_back(u);
    if (in_backward_) ++stats_.reduce_scatters_during_backward;
    memory_.at(memory::MemoryPoint::kGradientCollectiveLaunched);
  }
}

void FullyShardedDataParallel::reap_reduce_scatters(bool wait) {
  while (!in_flight_reduces_.empty()) {
    const size_t u = in_flight_reduces_.front();
    Unit& unit = *state_[u];
    if (!wait && !unit.reduce->is_completed()) return;
    const auto start = Clock::now();
    unit.reduce->wait(timeout());
    stats_.wait_seconds += seconds_since(start);
    if (options_.trace) {
      options_.trace->span(fmt::format("reduce_scatter unit {}", u), "comm-grad",
                           unit.reduce_launched, unit.reduce->finished_at());
    }
    unit.reduce.reset();
    unit.grad_full = at::Tensor();
    std::fill(unit.written.begin(), unit.written.end(), false);
    in_flight_reduces_.erase(in_flight_reduces_.begin());
    memory_.at(memory::MemoryPoint::kGradientBufferReleased);
  }
}

void FullyShardedDataParallel::finish_backward() {
  StorageTouchObserver::Pause pause;
  try {
    rethrow_failure();
    if (sync_enabled_) {
      std::vector<std::string> unused;
      for (auto& unit : state_) {
        for (size_t k = 0; k < unit->params.size(); ++k) {
          if (unit->ready[k]) continue;
          unused.push_back(names_[unit->params[k]]);
          unit->ready[k] = true;
        }
        unit->pending = 0;
      }
      detail::check_no_unused_parameters(comm_->rank(), "FullyShardedDataParallel", "FsdpOptions",
                                         unused, options_.find_unused_parameters);
      in_backward_ = false;
      launch_reduce_scatters();
      reap_reduce_scatters(/*wait=*/true);
      if (options_.broadcast_buffers) {
        at::NoGradGuard no_grad;
        detail::broadcast_buffers_from_rank0(*comm_, *module_, options_.timeout,
                                             "FullyShardedDataParallel");
      }
    }
  } catch (...) {
    abandon_iteration();
    throw;
  }
  finish_iteration();
  rethrow_failure();  // a prefetch nobody waited for failed
}

// After an error: drops gradients in flight and ends the iteration, so that
// the object is in a known state (its communicator may not be usable).
void FullyShardedDataParallel::abandon_iteration() {
  try {
    reap_reduce_scatters(/*wait=*/true);  // what was launched, every rank launched
  } catch (const std::exception& e) {
    log::warn("rank {}: FullyShardedDataParallel: {}", comm_->rank(), e.what());
  }
  for (auto& unit : state_) {
    unit->reduce.reset();
    unit->grad_full = at::Tensor();
    std::fill(unit->written.begin(), unit->written.end(), false);
  }
  in_flight_reduces_.clear();
  finish_iteration();
}

void FullyShardedDataParallel::finish_iteration() {
  for (size_t u = 0; u < state_.size(); ++u) {
    try {
      free_full(u);
    } catch (...) {  // a gather failed; keep the first error for the next call
      if (!failure_) failure_ = std::current_exception();
      if (state_[u]->state == State::kGathered) {
        free_storage(state_[u]->storage);
        state_[u]->state = State::kFreed;
      }
    }
  }
  for (auto& unit : state_) {
    std::fill(unit->ready.begin(), unit->ready.end(), false);
    unit->pending = unit->params.size();
  }
  next_reduce_ = 0;
  in_backward_ = false;
  recording_ = false;
  cursor_ = 0;
  on_sequence_ = true;
  current_.reset();
  last_stats_ = stats_;
  stats_ = Stats{};
  memory_.at(memory::MemoryPoint::kBackwardEnds);
}

}  // namespace tandem::parallel
