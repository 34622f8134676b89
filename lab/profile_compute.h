// The compute half of `tandem profile`: trains a zoo model for a few steps
// on one process and measures, per layer in forward order, its forward and
// backward time and its byte sizes (sim::ComputeProfile). A layer is a
// module that owns parameters itself (each Linear, Conv2d, BatchNorm2d,
// LayerNorm, Embedding of the zoo's models). See Note [Layer spans] in
// profile_compute.cpp for how the times are cut, and docs/lab.md for the
// fields.
//
// Not thread-safe: the forward pass is watched through a thread-local
// at::RecordFunction callback, so call it from one thread, with nothing else
// arming one on that thread (the activation tracker). Nothing is collective.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/sim/profile.h"
#include "tandem/train/choices.h"
#include "tandem/train/models/models.h"

namespace tandem {
class TraceRecorder;
}

namespace tandem::lab {

struct ProfileComputeOptions {
  train::ModelKind model = train::ModelKind::kMlp;
  // The zoo's settings for the model; the defaults are `tandem train`'s.
  train::ModelOptions model_options = {};
  // Samples per step, >= 1; every time in the profile is for this batch.
  int64_t batch_size = 32;
  train::Dtype dtype = train::Dtype::kFloat32;
  // Untimed steps first (allocator and caches warm up), >= 0.
  int warmup = 3;
  // Timed steps, >= 1; times are their medians, spreads their IQR. More
  // steps give steadier medians at a proportional cost.
  int steps = 10;
  // `tandem train`'s optimizer of this kind at its default settings (SGD:
  // lr 0.05, momentum 0.9).
  train::OptimizerKind optimizer = train::OptimizerKind::kSgd;
  // When set, each timed step's layer spans go here (lanes "forward",
  // "backward", "optimizer"). Not owned; must outlive the call.
  TraceRecorder* trace = nullptr;
};

// Profiles options.model as described above; blocks for warmup + steps
// training steps on the calling thread (with its intra-op threads). Throws
// InvalidArgument for bad options (naming the field), and whatever LibTorch
// throws for a batch the model cannot take.
sim::ComputeProfile profile_compute(const ProfileComputeOptions& options);

// The layers profile_compute() reports for `model`, in the modules'
// registration order (not forward order): each module that owns a
// parameter no earlier module owns, named by its path ("fc0",
// "layer1.0.conv1"; "(model)" for the root), with its parameters' bytes.
struct LayerParams {
  std::string name;
  int64_t param_bytes = 0;
};
std::vector<LayerParams> parameterised_layers(torch::nn::Module& model);

// A 16-hex-digit FNV-1a hash of every parameter's name, shape and dtype:
// equal for models built alike, different when the architecture changes.
std::string model_version(torch::nn::Module& model);

}  // namespace tandem::lab
