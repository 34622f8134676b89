#include "tandem/memory/activation_tracker.h"

// clang-format off
#include "memory/record_function.h"  // first: see there
// clang-format on

#include <c10/core/GradMode.h>
#include <c10/core/StorageImpl.h>

#include <unordered_map>

#include "tandem/core/check.h"
#include "tandem/memory/storage_set.h"

namespace tandem::memory {

// Weak references keep each StorageImpl object (not its memory) in place, so
// an address in `watched` cannot be reused by another storage until the
// entry is erased.
struct ActivationTracker::State {
  std::unordered_map<const c10::StorageImpl*, c10::weak_intrusive_ptr<c10::StorageImpl>> watched;
  size_t prune_at = 1024;
  at::CallbackHandle handle = at::INVALID_CALLBACK_HANDLE;

  void watch(const at::Tensor& t) {
    c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
    auto [it, inserted] = watched.try_emplace(
        impl, c10::weak_intrusive_ptr<c10::StorageImpl>(t.storage().getWeakStorageImpl()));
    if (!inserted) return;
    if (watched.size() >= prune_at) {
      prune();
      prune_at = std::max<size_t>(1024, 2 * watched.size());
    }
  }
  void prune() {
    std::erase_if(watched, [](const auto& entry) { return entry.second.expired(); });
  }
};

namespace {

thread_local ActivationTracker* t_current = nullptr;
thread_local ActivationTracker::State* t_state = nullptr;

std::unique_ptr<at::ObserverContext> on_op_start(const at::RecordFunction&) { return nullptr; }

void on_op_end(const at::RecordFunction& fn, at::ObserverContext*) {
  if (t_state == nullptr || !c10::GradMode::is_enabled()) return;
  for (const c10::IValue& out : fn.outputs()) {
    detail::for_each_stored_tensor(out, [](const at::Tensor& t) { t_state->watch(t); });
  }
}

}  // namespace

ActivationTracker::ActivationTracker() : state_(std::make_unique<State>()) {
  TANDEM_CHECK(t_current == nullptr,
               "ActivationTracker: this thread has an armed tracker already (one per thread)");
  t_current = this;
  t_state = state_.get();
  state_->handle = at::addThreadLocalCallback(at::RecordFunctionCallback(on_op_start, on_op_end)
                                                  .needsOutputs(true)
                                                  .scopes({at::RecordScope::FUNCTION}));
}

ActivationTracker::~ActivationTracker() {
  at::removeCallback(state_->handle);
  if (t_current == this) {
    t_current = nullptr;
    t_state = nullptr;
  }
}

ActivationTracker* ActivationTracker::current() { return t_current; }

int64_t ActivationTracker::alive_bytes(const StorageSet& excluded) {
  state_->prune();
  int64_t bytes = 0;
  for (const auto& [impl, weak] : state_->watched) {
    if (!excluded.contains(impl)) bytes += static_cast<int64_t>(impl->nbytes());
  }
  return bytes;
}

int64_t ActivationTracker::watched_storages() const {
  return static_cast<int64_t>(state_->watched.size());
}

int64_t activation_bytes(const StorageSet& model_state) {
  ActivationTracker* t = ActivationTracker::current();
  return t == nullptr ? 0 : t->alive_bytes(model_state);
}

}  // namespace tandem::memory
