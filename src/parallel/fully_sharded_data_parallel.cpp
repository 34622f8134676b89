#include "tandem/parallel/fully_sharded_data_parallel.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/Allocator.h>
#include <c10/core/StorageImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_set>

#include "parallel/detail/fsdp_units.h"
#include "parallel/detail/grad_hooks.h"
#include "parallel/detail/replicas.h"
#include "parallel/detail/storage_touch_observer.h"
#include "parallel/fully_sharded_data_parallel_unit.h"
#include "tandem/core/check.h"
#include "tandem/core/log.h"

namespace tandem::parallel {

using detail::StorageTouchObserver;

namespace {

using Clock = std::chrono::steady_clock;

// See Note [Gather on first touch]. The parameters' version counters never
// move: writes go through Unit::full, and freeing only swaps the data pointer.
void free_storage(c10::StorageImpl* s) {
  s->set_data_ptr_noswap(at::DataPtr(nullptr, s->device()));
  s->set_nbytes(0);
}

void allocate_storage(c10::StorageImpl* s, at::Allocator* allocator, size_t nbytes) {
  s->set_data_ptr_noswap(allocator->allocate(nbytes));
  s->set_nbytes(nbytes);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

FullyShardedDataParallel::FullyShardedDataParallel(std::shared_ptr<torch::nn::Module> module,
                                                   std::shared_ptr<Communicator> comm,
                                                   FsdpOptions options)
    : module_(std::move(module)), comm_(std::move(comm)), options_(std::move(options)) {
  TANDEM_CHECK(module_ != nullptr, "FullyShardedDataParallel: the module is null");
  TANDEM_CHECK(comm_ != nullptr, "FullyShardedDataParallel: the communicator is null");
  TANDEM_CHECK(!options_.timeout || options_.timeout->count() > 0,
               "FsdpOptions::timeout must be positive (got {} ms)",
               options_.timeout ? options_.timeout->count() : 0);
  std::unordered_set<const void*> seen;
  for (const auto& item : module_->named_parameters(/*recurse=*/true)) {
    const at::Tensor& p = item.value();
    if (!p.requires_grad()) continue;  // frozen: stays replicated
    TANDEM_CHECK(p.device().is_cpu(),
                 "FullyShardedDataParallel: parameter '{}' is on {}; this build shards CPU tensors",
                 item.key(), p.device().str());
    if (!seen.insert(p.unsafeGetTensorImpl()).second) {
      throw NotSupported(fmt::format(
          "FullyShardedDataParallel: parameter '{}' is registered twice (tied weights); "
          "FSDP shards each parameter once, so untie them or freeze one",
          item.key()));
    }
    names_.push_back(item.key());
    params_.push_back(p);
  }
  build_units();  // validates the policy and dtypes before any collective
  detail::check_replicas_match(*comm_, names_, params_, "FullyShardedDataParallel");
  {
    at::NoGradGuard no_grad;
    detail::broadcast_from_rank0(*comm_, params_, options_.timeout);
    detail::broadcast_from_rank0(*comm_, module_->buffers(/*recurse=*/true), options_.timeout);
  }
  grad_comm_ = comm_->split(0, comm_->rank(), options_.timeout);
  shard_units();
  observer_ = std::make_unique<StorageTouchObserver>(
      [this](const std::vector<size_t>& units) { on_touch(units); });
  for (size_t u = 0; u < state_.size(); ++u) observer_->watch(state_[u]->storage, u);
  grad_hooks_ =
      std::make_unique<detail::GradReadyHooks>(params_, [this](size_t i) { grad_ready(i); });
  // Gradients usually complete in reverse unit order (the reverse of forward).
  reduce_order_.resize(state_.size());
  std::iota(reduce_order_.rbegin(), reduce_order_.rend(), size_t{0});
  sample_memory();
}

FullyShardedDataParallel::~FullyShardedDataParallel() {
  grad_hooks_.reset();
  observer_.reset();
  for (auto& unit : state_) {
    for (auto* work : {&unit->gather, &unit->reduce}) {
      if (!*work) continue;
      try {
        (*work)->wait(timeout());  // it writes tensors that die with this object
      } catch (const std::exception& e) {
        log::warn("FullyShardedDataParallel: dropping {}: {}", (*work)->description(), e.what());
      }
    }
  }
}

Millis FullyShardedDataParallel::timeout() const {
  return options_.timeout.value_or(comm_->timeout());
}

void FullyShardedDataParallel::build_units() {
  const auto plan = detail::plan_units(*module_, names_, options_.wrap);
  unit_of_.assign(params_.size(), 0);
  slot_of_.assign(params_.size(), 0);
  for (size_t u = 0; u < plan.size(); ++u) {
    FsdpUnitInfo info;
    info.module = plan[u].module;
    std::vector<at::Tensor> tensors;
    for (size_t k = 0; k < plan[u].params.size(); ++k) {
      const size_t i = plan[u].params[k];
      const size_t first = plan[u].params[0];
      TANDEM_CHECK(params_[i].scalar_type() == params_[first].scalar_type(),
                   "FullyShardedDataParallel: unit '{}' mixes dtypes: '{}' is {} but '{}' is {}; "
                   "choose a wrap policy that puts them in different units",
                   info.module, names_[i], c10::toString(params_[i].scalar_type()), names_[first],
                   c10::toString(params_[first].scalar_type()));
      info.parameter_names.push_back(names_[i]);
      tensors.push_back(params_[i]);
      unit_of_[i] = u;
      slot_of_[i] = k;
    }
    std::vector<size_t> order(tensors.size());
    std::iota(order.begin(), order.end(), size_t{0});
    info.layout = make_flat_layout(tensors, order);
    info.shard = shard_range(info.layout.numel, comm_->size(), comm_->rank());
    units_.push_back(std::move(info));
    auto unit = std::make_unique<Unit>();
    unit->params = plan[u].params;
    state_.push_back(std::move(unit));
  }
}

// Each unit's parameters become views of one flat buffer; this rank keeps
// its shard and the buffer's storage is freed until the unit is used.
void FullyShardedDataParallel::shard_units() {
  at::NoGradGuard no_grad;
  for (size_t u = 0; u < units_.size(); ++u) {
    const FsdpUnitInfo& info = units_[u];
    Unit& unit = *state_[u];
    std::vector<at::Tensor> tensors;
    for (size_t i : unit.params) tensors.push_back(params_[i]);
    at::Tensor flat = at::empty({info.layout.numel}, params_[unit.params[0]].options());
    copy_range_out(info.layout, tensors, {0, info.layout.numel}, flat);
    unit.shard = flat.narrow(0, info.shard.offset, info.shard.numel).clone();
    unit.shard.set_requires_grad(true);
    unit.shard_data = unit.shard.detach();
    std::vector<at::Tensor> views = entry_views(info.layout, flat, tensors.size());
    for (size_t k = 0; k < unit.params.size(); ++k) params_[unit.params[k]].set_data(views[k]);
    unit.full = at::empty({0}, flat.options());
    unit.full.set_(flat.storage(), 0, {info.layout.numel}, {1});
    unit.storage = flat.storage().unsafeGetStorageImpl();
    unit.allocator = unit.storage->allocator();
    TANDEM_ASSERT(unit.allocator != nullptr, "unit '{}' has a storage without allocator",
                  info.module);
    unit.full_bytes = unit.storage->nbytes();
    free_storage(unit.storage);
    unit.ready.assign(unit.params.size(), false);
    unit.written.assign(unit.params.size(), false);
    unit.pending = unit.params.size();
  }
}

std::vector<at::Tensor> FullyShardedDataParallel::parameters() const {
  std::vector<at::Tensor> shards;
  for (const auto& unit : state_) shards.push_back(unit->shard);
  return shards;
}

// ---- gathering -------------------------------------------------------------

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
  sample_memory();
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
  sample_memory();
}

void FullyShardedDataParallel::reshard() {
  for (size_t u = 0; u < state_.size(); ++u) free_full(u);
  current_.reset();
}

// ---- gradients -------------------------------------------------------------

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
    sample_memory();
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
    sample_memory();
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
    sample_memory();
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
      TANDEM_CHECK(unused.empty() || options_.find_unused_parameters,
                   "rank {}: FullyShardedDataParallel: parameter{} {} got no gradient in this "
                   "backward; if some parameters are unused in some iterations, set "
                   "FsdpOptions::find_unused_parameters (they then contribute zeros), or freeze "
                   "them with requires_grad(false)",
                   comm_->rank(), unused.size() == 1 ? "" : "s", fmt::join(unused, ", "));
      in_backward_ = false;
      launch_reduce_scatters();
      reap_reduce_scatters(/*wait=*/true);
      if (options_.broadcast_buffers) {
        at::NoGradGuard no_grad;
        detail::broadcast_from_rank0(*comm_, module_->buffers(/*recurse=*/true), options_.timeout);
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
  sample_memory();
}

void FullyShardedDataParallel::rethrow_failure() {
  if (!failure_) return;
  std::exception_ptr e = failure_;
  failure_ = nullptr;
  std::rethrow_exception(e);
}

// ---- no_sync ---------------------------------------------------------------

FullyShardedDataParallel::NoSyncGuard::NoSyncGuard(FullyShardedDataParallel& fsdp)
    : fsdp_(fsdp), previous_(fsdp.sync_enabled_) {
  fsdp_.sync_enabled_ = false;
}

FullyShardedDataParallel::NoSyncGuard::~NoSyncGuard() { fsdp_.sync_enabled_ = previous_; }

}  // namespace tandem::parallel
