// Counts activation memory: the storages that LibTorch ops create during a
// forward pass (with autograd recording) and that are still alive, because
// autograd saved them for backward or the caller holds them. It watches the
// outputs of every op on its thread (an at::RecordFunction callback) and
// keeps weak references to their storages, so it measures tensors by
// identity, not by asking the allocator. The memory accounting adds what it
// counts, less the model state, to each sample a strategy reports
// (memory_probe.h); this is what makes the accounting's peak comparable with
// the process's.
//
// Ops run without grad mode (optimizer steps, backward, evaluation under
// no_grad) are not watched. At most one tracker per thread; it counts the ops
// of the thread that made it. Armed, it costs each watched op a callback
// and a hash-map insert; docs/sharding.md gives the measured slowdown
// (`tandem bench memory --tracker-overhead-rounds` measures it).
//
// Not thread-safe: each tracker belongs to one thread. Nothing here is
// collective.
#pragma once

#include <cstdint>
#include <memory>

namespace tandem::memory {

class StorageSet;

class ActivationTracker {
 public:
  // Arms the tracker on the calling thread. Throws InvalidArgument if this
  // thread has one already.
  ActivationTracker();
  // Disarms it; must run on the thread that made it.
  ~ActivationTracker();
  ActivationTracker(const ActivationTracker&) = delete;
  ActivationTracker& operator=(const ActivationTracker&) = delete;

  // The tracker armed on the calling thread, or null.
  static ActivationTracker* current();

  // Bytes of the watched storages still alive, each counted once, less those
  // in `excluded` (the model state: a parameter's view made in forward shares
  // the parameter's storage). Forgets the storages that died.
  int64_t alive_bytes(const StorageSet& excluded);
  // Storages watched and not yet forgotten (for tests).
  int64_t watched_storages() const;

  struct State;  // the watched storages, defined in activation_tracker.cpp

 private:
  std::unique_ptr<State> state_;
};

// What the tracker armed on this thread counts beside `model_state`; 0 where
// none is armed.
int64_t activation_bytes(const StorageSet& model_state);

}  // namespace tandem::memory
