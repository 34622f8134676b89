#include "parallel/fsdp/storage_touch_observer.h"

// clang-format off
#include "memory/record_function.h"  // before anything that includes ATen/record_function.h
// clang-format on

#include <algorithm>
#include <mutex>

namespace tandem::parallel::detail {

// Note [Gather on first touch]
// LibTorch's C++ modules have no forward pre-hooks, and a unit's forward is
// called by its parent's own code, so FSDP cannot wrap it. Instead, each
// unit's parameters are views into one flat buffer whose storage is empty
// between uses, and an ATen RecordFunction callback (the profiler's hook,
// which sees every dispatched operator's inputs before its kernel runs, in
// forward and in backward alike) reports any operator reading such a
// storage, directly or through a view (weight.t() shares it). The owner
// then fills the storage in place, so tensors autograd saved for backward
// see the data again when it is re-gathered: what PyTorch's FSDP does with
// storage resize.
//
// The callback is thread-local: the communicator's own threads, which copy
// into these buffers while gathering, must not trigger it; autograd threads
// inherit it with the rest of the thread-local state. RecordFunction takes
// a plain function pointer with no user data, so the observers live in a
// process-wide registry; it holds raw pointers to live observers only (each
// removes itself in its destructor), never a cache.
namespace {

std::mutex registry_mutex;
std::vector<StorageTouchObserver*> registry;  // guarded by registry_mutex

thread_local bool paused = false;
thread_local int observers_on_thread = 0;
thread_local at::CallbackHandle handle_on_thread = at::INVALID_CALLBACK_HANDLE;

std::unique_ptr<at::ObserverContext> on_operator_start(const at::RecordFunction& fn) {
  if (paused) return nullptr;
  thread_local std::vector<const c10::StorageImpl*> storages;
  thread_local std::vector<size_t> ids;
  storages.clear();
  for (const c10::IValue& v : fn.inputs()) {
    memory::detail::for_each_stored_tensor(v, [](const at::Tensor& t) {
      storages.push_back(t.storage().unsafeGetStorageImpl());
    });
  }
  if (storages.empty()) return nullptr;
  std::vector<std::pair<StorageTouchObserver*, std::vector<size_t>>> hits;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    for (StorageTouchObserver* o : registry) {
      ids.clear();
      o->match(storages, ids);
      if (!ids.empty()) hits.emplace_back(o, ids);
    }
  }
  // Outside the lock: the owner gathers (and may wait) in notify().
  for (const auto& [observer, touched] : hits) {
    StorageTouchObserver::Pause pause;
    observer->notify(touched);
  }
  return nullptr;
}

}  // namespace

StorageTouchObserver::StorageTouchObserver(OnTouch on_touch) : on_touch_(std::move(on_touch)) {
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    registry.push_back(this);
  }
  if (observers_on_thread++ == 0) {
    handle_on_thread = at::addThreadLocalCallback(at::RecordFunctionCallback(&on_operator_start)
                                                      .needsInputs(true)
                                                      .scopes({at::RecordScope::FUNCTION}));
  }
}

StorageTouchObserver::~StorageTouchObserver() {
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    registry.erase(std::remove(registry.begin(), registry.end(), this), registry.end());
  }
  // Destroyed on another thread, the callback stays on the constructing one,
  // where it finds no observer and does nothing.
  if (observers_on_thread > 0 && --observers_on_thread == 0) {
    at::removeCallback(handle_on_thread);
    handle_on_thread = at::INVALID_CALLBACK_HANDLE;
  }
}

void StorageTouchObserver::watch(const c10::StorageImpl* storage, size_t id) { ids_[storage] = id; }

void StorageTouchObserver::match(const std::vector<const c10::StorageImpl*>& storages,
                                 std::vector<size_t>& ids) const {
  for (const c10::StorageImpl* s : storages) {
    auto it = ids_.find(s);
    if (it == ids_.end()) continue;
    if (std::find(ids.begin(), ids.end(), it->second) == ids.end()) ids.push_back(it->second);
  }
}

StorageTouchObserver::Pause::Pause() : previous_(paused) { paused = true; }

StorageTouchObserver::Pause::~Pause() { paused = previous_; }

}  // namespace tandem::parallel::detail
