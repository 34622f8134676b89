// FullyShardedDataParallel's gathering: a unit's parameters are all-gathered
// when an operator first touches them (see Note [Gather on first touch] in
// storage_touch_observer.cpp), the next unit is prefetched, and the unit in
// use until then is freed.
#include <ATen/ops/empty.h>
#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "parallel/fsdp/storage_touch_observer.h"
#include "parallel/fsdp/unit.h"
#include "tandem/core/log.h"
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"

namespace tandem::parallel {

using detail::StorageTouchObserver;
using detail::Clock;
using detail::allocate_storage;
using detail::free_storage;
using detail::seconds_since;

// Called before an operator reads units' storage. It must not throw (see
// StorageTouchObserver): a failure is kept, the storage is filled with NaN so
// that the operator can run, and the next backward throws the failure.
void FullyShardedDataParallel::on_touch(const std::vector<size_t>& units) {
  try {
    if (!failure_) {
      for (size_t u : units) touch(u, units);
      return;
    }
  } catch (const std::exception& e) {
    failure_ = std::current_exception();
    log::error(
        "rank {}: FullyShardedDataParallel: gathering parameters failed: {}; the next "
        "backward throws this error",
        comm_->rank(), e.what());
  }
  for (size_t u : units) {
    Unit& unit = *state_[u];
    if (unit.state == State::kGathered) continue;
    if (unit.state == State::kGathering && unit.gather && !unit.gather->is_completed()) {
      continue;  // allocated, and its collective may still write it
    }
    unit.gather.reset();
    try {
      if (unit.state == State::kFreed) {
        allocate_storage(unit.storage, unit.allocator, unit.full_bytes);
      }
      if (at::isFloatingType(unit.full.scalar_type())) {
        unit.full.fill_(std::numeric_limits<double>::quiet_NaN());
      }
    } catch (const std::exception& e) {
      log::error("rank {}: FullyShardedDataParallel: {}", comm_->rank(), e.what());
    }
    unit.state = State::kGathered;
  }
}

void FullyShardedDataParallel::touch(size_t u, const std::vector<size_t>& in_use) {
  if (current_ == u) return;
  Unit& unit = *state_[u];
  const std::optional<size_t> previous = current_;
  current_ = u;
  if (recording_) {
    sequence_.push_back(u);
  } else if (on_sequence_ && cursor_ < sequence_.size() && sequence_[cursor_] == u) {
    ++cursor_;
  } else {
    // Off the recorded order; a new iteration (e.g. after an evaluation
    // forward) starts it again.
    on_sequence_ = !sequence_.empty() && sequence_[0] == u;
    cursor_ = on_sequence_ ? 1 : 0;
  }
  const bool prefetching = options_.prefetch && !recording_ && on_sequence_;
  const std::optional<size_t> next =
      prefetching && cursor_ < sequence_.size() ? std::optional(sequence_[cursor_]) : std::nullopt;
  // The unit in use until now is freed, unless this operator or the next
  // unit (backward right after forward) needs it.
  if (previous && std::find(in_use.begin(), in_use.end(), *previous) == in_use.end() &&
      next != previous) {
    free_full(*previous);
  }
  if (unit.state == State::kFreed) {
    gather_async(u, /*prefetch=*/false);
  } else if (unit.prefetched) {
    ++stats_.prefetch_hits;
  }
  unit.prefetched = false;
  wait_gathered(u);
  if (next && state_[*next]->state == State::kFreed) gather_async(*next, /*prefetch=*/true);
}

void FullyShardedDataParallel::gather_async(size_t u, bool prefetch) {
  Unit& unit = *state_[u];
  StorageTouchObserver::Pause pause;
  allocate_storage(unit.storage, unit.allocator, unit.full_bytes);
  unit.state = State::kGathering;
  unit.prefetched = prefetch;
  unit.gather_launched = Clock::now();
  unit.gather = comm_->all_gather_async(unit.full, unit.shard_data, options_.timeout);
  ++stats_.all_gathers;
  if (prefetch) ++stats_.prefetched;
  int gathered = 0;
  int64_t bytes = 0;
  for (const auto& s : state_) {
    if (s->state == State::kFreed) continue;
    ++gathered;
    bytes += static_cast<int64_t>(s->full_bytes);
  }
  stats_.max_gathered_units = std::max(stats_.max_gathered_units, gathered);
  stats_.max_gathered_bytes = std::max(stats_.max_gathered_bytes, bytes);
  memory_.at(memory::MemoryPoint::kParametersGathered);
}

void FullyShardedDataParallel::wait_gathered(size_t u) {
  Unit& unit = *state_[u];
  if (unit.state != State::kGathering) return;
  const auto start = Clock::now();
  try {
    unit.gather->wait(timeout());
  } catch (...) {
    // A collective still running after its error keeps the unit gathering,
    // so that nothing frees the storage it may still write.
    if (unit.gather->is_completed()) {
      unit.gather.reset();
      unit.state = State::kGathered;
    }
    throw;
  }
  stats_.wait_seconds += seconds_since(start);
  unit.state = State::kGathered;
  if (options_.trace) {
    options_.trace->span(fmt::format("all_gather unit {}", u), "comm", unit.gather_launched,
                         unit.gather->finished_at());
    options_.trace->span(fmt::format("wait all_gather unit {}", u), "compute", start, Clock::now());
  }
  unit.gather.reset();
}

void FullyShardedDataParallel::free_full(size_t u) {
  Unit& unit = *state_[u];
  if (unit.state == State::kFreed) return;
  wait_gathered(u);  // never free under a collective writing it
  free_storage(unit.storage);
  unit.state = State::kFreed;
  unit.prefetched = false;
  if (current_ == u) current_.reset();
  memory_.at(memory::MemoryPoint::kParametersFreed);
}

void FullyShardedDataParallel::reshard() {
  for (size_t u = 0; u < state_.size(); ++u) free_full(u);
  current_.reset();
}

}  // namespace tandem::parallel
