// Memory accounting for the model state a rank holds: parameters, gradients
// and optimizer state, in bytes, now and at peak. Each strategy (DDP, ZeRO,
// FSDP) measures what it really holds, by walking its tensors' storages
// (storage_set.h), not by formula, and reports it through a MemoryProbe
// (memory_probe.h) at named points of a step; tests and `tandem bench
// memory` compare the figures with the ZeRO paper's theory and with the
// process's own allocator (allocator_stats.h). Where an ActivationTracker is
// armed on the training thread, each sample also counts the live
// activations beside the model state (activation_tracker.h).
//
// Not thread-safe; one object per strategy. Nothing here is collective.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace tandem::memory {

struct ModelStateBytes {
  int64_t parameters = 0;
  int64_t gradients = 0;
  int64_t optimizer_state = 0;
  int64_t total() const { return parameters + gradients + optimizer_state; }
};

// The tensors of a rank's model state at one moment, by kind. Each storage
// counts once, under the first kind that names it (parameters, then
// gradients, then optimizer state), so views of one flat buffer listed
// twice cost nothing more; every storage listed is model state, left out of
// the activation count.
struct ModelStateTensors {
  std::vector<at::Tensor> parameters;
  std::vector<at::Tensor> gradients;
  std::vector<at::Tensor> optimizer_state;
  // Optimizer-state bytes measured earlier, added as they are: state the
  // strategy does not hold itself (DDP: the caller's optimizer, measured when
  // it is handed over).
  int64_t optimizer_state_bytes = 0;
};

// Where in a training step a sample was taken: the named points at which a
// strategy reports what it holds (MemoryProbe::at).
enum class MemoryPoint {
  kConstructed,                 // the strategy has set up its state
  kBackwardBegins,              // the first gradient of a backward: nearly every
                                // activation is alive (see MemoryProbe::at)
  kGradientBufferAllocated,     // a staging buffer for gradients was allocated
  kGradientCollectiveLaunched,  // a bucket's or unit's gradient collective was launched
  kGradientBufferReleased,      // such a collective finished and its buffer was freed
  kBackwardEnds,                // a synchronised backward (or an FSDP iteration) ended
  kParametersGathered,          // a unit's full parameters were allocated for its all-gather
  kParametersFreed,             // a unit's full parameters were freed
  kOptimizerStepped,            // after the optimizer step (and ZeRO's all-gathers)
  kRequested,                   // the caller asked (sample_memory, account_optimizer)
};

// The point's name without the k: "BackwardBegins".
const char* to_string(MemoryPoint point);

// Keeps the latest sample and the peaks. `peak()` holds the largest value
// each field has reached; `peak_total()` the largest model-state sum in one
// sample (which can be less than peak().total(), as fields peak at different
// times); `peak_with_activations()` the largest model state plus activations
// in one sample, the figure to hold against the process's peak, and
// `peak_point()` where that sample was taken.
class MemoryAccounting {
 public:
  // Records a sample; `activations`: bytes of live activations beside the
  // model state.
  void record(const ModelStateBytes& now, int64_t activations = 0,
              MemoryPoint point = MemoryPoint::kRequested);
  // Measures `held` (see ModelStateTensors) and the activations that the
  // ActivationTracker armed on this thread counts beside it (none if there
  // is none), and records them.
  void sample(const ModelStateTensors& held, MemoryPoint point = MemoryPoint::kRequested);
  // The same for three lists of tensors.
  void sample(const std::vector<at::Tensor>& parameters, const std::vector<at::Tensor>& gradients,
              const std::vector<at::Tensor>& optimizer_state);
  const ModelStateBytes& now() const { return now_; }
  const ModelStateBytes& peak() const { return peak_; }
  int64_t peak_total() const { return peak_total_; }
  int64_t activations_now() const { return activations_now_; }
  int64_t peak_activations() const { return peak_activations_; }
  int64_t peak_with_activations() const { return peak_with_activations_; }
  MemoryPoint peak_point() const { return peak_point_; }
  // Sets every peak to the latest sample.
  void reset_peak();

 private:
  ModelStateBytes now_, peak_;
  int64_t peak_total_ = 0;
  int64_t activations_now_ = 0, peak_activations_ = 0, peak_with_activations_ = 0;
  MemoryPoint point_now_ = MemoryPoint::kRequested, peak_point_ = MemoryPoint::kRequested;
};

}  // namespace tandem::memory
