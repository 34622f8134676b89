#include "tandem/memory/memory_probe.h"

#include <utility>

#include "tandem/core/check.h"
#include "tandem/memory/activation_tracker.h"

namespace tandem::memory {

MemoryProbe::MemoryProbe(Collect collect) : collect_(std::move(collect)) {
  TANDEM_CHECK(collect_ != nullptr, "MemoryProbe: the collect function is empty");
}

bool MemoryProbe::samples(MemoryPoint point) {
  return point != MemoryPoint::kBackwardBegins || ActivationTracker::current() != nullptr;
}

void MemoryProbe::at(MemoryPoint point) {
  if (!samples(point)) return;
  ModelStateTensors held;
  collect_(held);
  accounting_.sample(held, point);
}

}  // namespace tandem::memory
