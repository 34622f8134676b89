#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <c10/core/StorageImpl.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include <numeric>
#include <unordered_set>

#include "parallel/detail/grad_hooks.h"
#include "parallel/detail/replicas.h"
#include "parallel/fsdp/storage_touch_observer.h"
#include "parallel/fsdp/unit.h"
#include "parallel/fsdp/unit_plan.h"
#include "tandem/core/check.h"
#include "tandem/core/log.h"

namespace tandem::parallel {

using detail::free_storage;
using detail::StorageTouchObserver;

FullyShardedDataParallel::FullyShardedDataParallel(std::shared_ptr<torch::nn::Module> module,
                                                   std::shared_ptr<Communicator> comm,
                                                   FsdpOptions options)
    : module_(std::move(module)), comm_(std::move(comm)), options_(std::move(options)) {
  TANDEM_CHECK(module_ != nullptr, "FullyShardedDataParallel: the module is null");
  TANDEM_CHECK(comm_ != nullptr, "FullyShardedDataParallel: the communicator is null");
  TANDEM_CHECK(!options_.timeout || options_.timeout->count() > 0,
               "FsdpOptions::timeout must be positive (got {} ms)",
               options_.timeout ? options_.timeout->count() : 0);
  // Frozen parameters stay replicated.
  auto [names, params] =
      detail::trainable_parameters(*module_, "FullyShardedDataParallel", "shards");
  names_ = std::move(names);
  params_ = std::move(params);
  std::unordered_set<const void*> seen;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!seen.insert(params_[i].unsafeGetTensorImpl()).second) {
      throw NotSupported(fmt::format(
          "FullyShardedDataParallel: parameter '{}' is registered twice (tied weights); "
          "FSDP shards each parameter once, so untie them or freeze one",
          names_[i]));
    }
  }
  build_units();  // validates the policy and dtypes before any collective
  detail::check_replicas_match(*comm_, names_, params_, "FullyShardedDataParallel");
  {
    at::NoGradGuard no_grad;
    detail::broadcast_from_rank0(*comm_, params_, options_.timeout);
    if (options_.broadcast_buffers) {
      detail::broadcast_buffers_from_rank0(*comm_, *module_, options_.timeout,
                                           "FullyShardedDataParallel");
    }
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
  memory_.at(memory::MemoryPoint::kConstructed);
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
