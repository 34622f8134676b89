// MemoryProbe: the one hook through which a strategy reports its memory. A
// strategy owns one, built with a function that lists the tensors it holds
// (ModelStateTensors), and calls at(point) at the named points of a step
// (MemoryPoint: backward begins, a gradient buffer allocated, a unit
// gathered, ...). The probe decides whether the point is sampled, measures
// the tensors' storages (each once) and the live activations beside them,
// and keeps the figures (MemoryAccounting), so the accounting logic lives
// here and a strategy spends one line per point.
//
// Not thread-safe: call it from the training thread (autograd hooks run on
// the thread running backward, which is the one the ActivationTracker
// watches). Nothing here is collective.
#pragma once

#include <functional>

#include "tandem/memory/memory_accounting.h"

namespace tandem::memory {

class MemoryProbe {
 public:
  // Fills `held` (empty on entry) with the tensors the strategy holds now.
  using Collect = std::function<void(ModelStateTensors& held)>;

  // `collect` is called by at(), never after this object is destroyed.
  // Throws InvalidArgument if it is empty.
  explicit MemoryProbe(Collect collect);
  MemoryProbe(const MemoryProbe&) = delete;
  MemoryProbe& operator=(const MemoryProbe&) = delete;

  // Reports `point`: collects the held tensors and records a sample. Every
  // point is sampled except kBackwardBegins without an ActivationTracker
  // armed on this thread: that sample exists to catch the activations at
  // their peak, and skipping it spares untracked steps a storage walk.
  // Exceptions from `collect` propagate.
  void at(MemoryPoint point);
  // Whether at(point) records a sample now.
  static bool samples(MemoryPoint point);

  const MemoryAccounting& accounting() const { return accounting_; }
  // Sets the peaks to the latest sample (MemoryAccounting::reset_peak).
  void reset_peak() { accounting_.reset_peak(); }

 private:
  Collect collect_;
  MemoryAccounting accounting_;
};

}  // namespace tandem::memory
