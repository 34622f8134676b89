#include "tandem/memory/memory_accounting.h"

#include <algorithm>

#include "tandem/memory/activation_tracker.h"
#include "tandem/memory/storage_set.h"

namespace tandem::memory {

const char* to_string(MemoryPoint point) {
  switch (point) {
    case MemoryPoint::kConstructed: return "Constructed";
    case MemoryPoint::kBackwardBegins: return "BackwardBegins";
    case MemoryPoint::kGradientBufferAllocated: return "GradientBufferAllocated";
    case MemoryPoint::kGradientCollectiveLaunched: return "GradientCollectiveLaunched";
    case MemoryPoint::kGradientBufferReleased: return "GradientBufferReleased";
    case MemoryPoint::kBackwardEnds: return "BackwardEnds";
    case MemoryPoint::kParametersGathered: return "ParametersGathered";
    case MemoryPoint::kParametersFreed: return "ParametersFreed";
    case MemoryPoint::kOptimizerStepped: return "OptimizerStepped";
    case MemoryPoint::kRequested: return "Requested";
  }
  return "?";
}

void MemoryAccounting::record(const ModelStateBytes& now, int64_t activations, MemoryPoint point) {
  now_ = now;
  activations_now_ = activations;
  point_now_ = point;
  peak_.parameters = std::max(peak_.parameters, now.parameters);
  peak_.gradients = std::max(peak_.gradients, now.gradients);
  peak_.optimizer_state = std::max(peak_.optimizer_state, now.optimizer_state);
  peak_total_ = std::max(peak_total_, now.total());
  peak_activations_ = std::max(peak_activations_, activations);
  if (now.total() + activations > peak_with_activations_) {
    peak_with_activations_ = now.total() + activations;
    peak_point_ = point;
  }
}

void MemoryAccounting::sample(const ModelStateTensors& held, MemoryPoint point) {
  StorageSet model_state;
  ModelStateBytes now;
  now.parameters = model_state.add(held.parameters);
  now.gradients = model_state.add(held.gradients);
  now.optimizer_state = model_state.add(held.optimizer_state) + held.optimizer_state_bytes;
  record(now, activation_bytes(model_state), point);
}

void MemoryAccounting::sample(const std::vector<at::Tensor>& parameters,
                              const std::vector<at::Tensor>& gradients,
                              const std::vector<at::Tensor>& optimizer_state) {
  sample({parameters, gradients, optimizer_state});
}

void MemoryAccounting::reset_peak() {
  peak_ = now_;
  peak_total_ = now_.total();
  peak_activations_ = activations_now_;
  peak_with_activations_ = now_.total() + activations_now_;
  peak_point_ = point_now_;
}

}  // namespace tandem::memory
