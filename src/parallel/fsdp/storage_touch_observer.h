// Tells a sharded strategy that an operator is about to read one of its
// flat parameter buffers, before the operator's kernel runs. FSDP uses it
// to all-gather a unit's parameters on first touch, in forward and in
// backward, for any module, without the module's cooperation.
// See Note [Gather on first touch] in storage_touch_observer.cpp.
//
// Thread-compatible: build, watch and destroy an observer on the thread that
// runs forward and backward; callbacks run on that thread (and on autograd
// threads that inherit its thread-local state).
#pragma once

#include <cstddef>
#include <functional>
#include <unordered_map>
#include <vector>

namespace c10 {
struct StorageImpl;
}

namespace tandem::parallel::detail {

class StorageTouchObserver {
 public:
  // on_touch(ids) runs before every operator (on the constructing thread)
  // one of whose tensor inputs lies in a watched storage; `ids` are the
  // distinct ids of those storages, in input order. on_touch must not
  // throw: the profiler hook that calls it swallows exceptions.
  using OnTouch = std::function<void(const std::vector<size_t>& ids)>;
  explicit StorageTouchObserver(OnTouch on_touch);
  ~StorageTouchObserver();
  StorageTouchObserver(const StorageTouchObserver&) = delete;
  StorageTouchObserver& operator=(const StorageTouchObserver&) = delete;

  // Reports operators on `storage` as touching `id`. The storage must
  // outlive this observer (the owner keeps a tensor on it).
  void watch(const c10::StorageImpl* storage, size_t id);

  // While a Pause lives, no observer runs on this thread: for the owner's
  // own operations on its buffers (gathering into them, copying out).
  class Pause {
   public:
    Pause();
    ~Pause();
    Pause(const Pause&) = delete;
    Pause& operator=(const Pause&) = delete;

   private:
    bool previous_;
  };

  // For the callback: the ids among `storages`, in order, without repeats.
  void match(const std::vector<const c10::StorageImpl*>& storages, std::vector<size_t>& ids) const;
  void notify(const std::vector<size_t>& ids) const { on_touch_(ids); }

 private:
  OnTouch on_touch_;
  std::unordered_map<const c10::StorageImpl*, size_t> ids_;
};

}  // namespace tandem::parallel::detail
