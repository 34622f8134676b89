// Memory accounting for the model state a rank holds: parameters, gradients
// and optimizer state, in bytes, now and at peak. Each strategy (DDP, ZeRO,
// FSDP) measures what it really holds, by walking its tensors' storages, not
// by formula; tests and `tandem bench memory` compare the figures with the
// ZeRO paper's theory and with the process's own allocator. Where an
// ActivationTracker is armed on the training thread, each sample also counts
// the live activations beside the model state (activation_tracker.h).
//
// Not thread-safe; one object per strategy.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace c10 {
struct StorageImpl;
}

namespace torch::optim {
class Optimizer;
class OptimizerParamState;
}  // namespace torch::optim

namespace tandem::parallel {

struct ModelStateBytes {
  int64_t parameters = 0;
  int64_t gradients = 0;
  int64_t optimizer_state = 0;
  int64_t total() const { return parameters + gradients + optimizer_state; }
};

// The distinct storages behind a set of tensors: counts each once, and
// tells the activation count what is model state.
class StorageSet {
 public:
  // Adds the storages of the defined tensors; returns the bytes of those not
  // in the set before (a freed storage, size 0, adds nothing).
  int64_t add(const std::vector<at::Tensor>& tensors);
  bool contains(const c10::StorageImpl* storage) const { return seen_.count(storage) > 0; }

 private:
  std::unordered_set<const c10::StorageImpl*> seen_;
};

// Keeps the latest sample and the peaks. `peak()` holds the largest value
// each field has reached; `peak_total()` the largest model-state sum in one
// sample (which can be less than peak().total(), as fields peak at different
// times); `peak_with_activations()` the largest model state plus activations
// in one sample, the figure to hold against the process's peak.
class MemoryAccounting {
 public:
  // `activations`: bytes of live activations beside the model state.
  void record(const ModelStateBytes& now, int64_t activations = 0);
  // Records `now` with the activations that the ActivationTracker armed on
  // this thread counts (none if there is none), less the storages of
  // `model_state`.
  void record(const ModelStateBytes& now, const StorageSet& model_state);
  // Measures the three kinds of tensors (each storage counted once) and
  // records them as above.
  void sample(const std::vector<at::Tensor>& parameters, const std::vector<at::Tensor>& gradients,
              const std::vector<at::Tensor>& optimizer_state);
  const ModelStateBytes& now() const { return now_; }
  const ModelStateBytes& peak() const { return peak_; }
  int64_t peak_total() const { return peak_total_; }
  int64_t activations_now() const { return activations_now_; }
  int64_t peak_activations() const { return peak_activations_; }
  int64_t peak_with_activations() const { return peak_with_activations_; }
  void reset_peak();

 private:
  ModelStateBytes now_, peak_;
  int64_t peak_total_ = 0;
  int64_t activations_now_ = 0, peak_activations_ = 0, peak_with_activations_ = 0;
};

// Bytes of the distinct storages behind the defined tensors: views of one
// buffer count once, and a freed storage (size 0) counts nothing.
int64_t storage_bytes(const std::vector<at::Tensor>& tensors);

// The .grad tensors of `params` (undefined ones skipped), for storage_bytes.
std::vector<at::Tensor> gradients_of(const std::vector<at::Tensor>& params);

// Tensors of an optimizer's per-parameter state (SGD momentum buffers, Adam
// and AdamW moments, Adagrad sums, RMSprop squares and buffers). Throws
// NotSupported for a state type it does not know.
std::vector<at::Tensor> optimizer_state_tensors(const torch::optim::Optimizer& optimizer);

// The tensors of one parameter's optimizer state by field name, as LibTorch
// names them ("momentum_buffer"; "exp_avg", "exp_avg_sq", "max_exp_avg_sq";
// "sum"; "square_avg", "grad_avg"), undefined ones left out; each has the
// parameter's shape. For sharded checkpoints. Throws NotSupported for a
// state type it does not know.
std::vector<std::pair<std::string, at::Tensor>> named_state_tensors(
    const torch::optim::OptimizerParamState& state);

}  // namespace tandem::parallel
