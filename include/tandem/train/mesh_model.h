// MeshModel: a zoo model trained over a device mesh, what `tandem train
// --mesh` runs. The world's ranks form a data x pipeline x tensor grid
// ("dp=2,pp=2", "dp=2,tp=2", "pp=2,tp=2"), tp varying fastest, then pp, so
// a layer's slices and then a pipeline's stages sit on neighbouring ranks:
//   pp: the model's layers (models/sequential.h) cut into balanced stages,
//       run by parallel::Pipeline with micro-batches and a schedule;
//   tp: GPT-mini split Megatron-style (models/gpt_mini_tp.h); with pp too,
//       each stage's layers are split, and the last stage computes the
//       vocabulary-parallel loss;
//   dp: the data; the trainer's strategy (ddp or zero1) averages each
//       stage's or slice's gradients over the ranks of the data dimension,
//       once per step (the pipeline's earlier micro-batches accumulate
//       under no_sync).
// Every rank builds the whole model from the same seed, keeps its part and
// drops the rest, so a mesh run starts from the weights one process would.
// Gradient clipping takes the whole model's norm: squares summed over
// stages and slices, a replicated parameter once.
// Batches are sharded over the data dimension only: the ranks of one
// pipeline or tensor group read the same batch.
//
// Collective over the world: construction and every call below. Not
// thread-safe.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/ordered_dict.h>

#include <memory>
#include <string>

#include "tandem/comm/communicator.h"
#include "tandem/comm/device_mesh.h"
#include "tandem/core/trace.h"
#include "tandem/memory/memory_accounting.h"
#include "tandem/train/trainer.h"

namespace tandem::train {

struct MeshShape {
  int dp = 1, pp = 1, tp = 1;
  int size() const { return dp * pp * tp; }
  std::string describe() const;  // "dp=2,pp=2"
};

// "dp=2,pp=2", "tp=4", "dp=2,pp=2,tp=2", ...: names dp, pp, tp, each at
// most once, extents >= 1, the missing ones 1. Throws InvalidArgument
// naming the problem.
MeshShape parse_mesh(const std::string& text);

// Checks the --mesh options against the world size (InvalidArgument naming
// the flag): the shape, the model, the strategy (ddp or zero1), the
// micro-batches and the flags a mesh run does not support yet.
void validate_mesh(const TrainerOptions& o, int world_size);

class MeshModel {
 public:
  // Collective. Builds o.model (seed o.seed, dtype o.dtype) and splits it
  // over parse_mesh(o.mesh); the pipeline takes o.micro_batches,
  // o.pipeline_schedule and o.recompute. Throws what validate_mesh throws.
  MeshModel(const TrainerOptions& o, std::shared_ptr<Communicator> world,
            std::shared_ptr<TraceRecorder> trace = nullptr);
  ~MeshModel();
  MeshModel(const MeshModel&) = delete;
  MeshModel& operator=(const MeshModel&) = delete;

  const DeviceMesh& mesh() const;
  // The data dimension's communicator: the sampler shards over it.
  const std::shared_ptr<Communicator>& data() const;

  // Collective. One optimizer step on (input, target), this data rank's
  // batch as the model takes it: sets the learning rate, zeroes the
  // gradients, runs forward and backward (by the pipeline schedule),
  // averages the gradients over the data dimension and steps. Returns the
  // global batch's mean loss, the same on every rank.
  double train_step(const at::Tensor& input, const at::Tensor& target, double lr);

  struct EvalSums {
    double loss = 0;     // summed cross-entropy
    double correct = 0;  // predictions equal to the target
    double count = 0;    // predictions
  };
  // Collective. Forward without gradients; sums over the global batch.
  EvalSums evaluate(const at::Tensor& input, const at::Tensor& target);

  // Collective. The whole model's parameters under its names, assembled
  // from the stages or slices.
  torch::OrderedDict<std::string, at::Tensor> full_parameters();
  // This rank's model-state bytes, as the data dimension's strategy
  // measures them.
  memory::MemoryAccounting memory() const;
  // Pipeline: micro-batches in flight at most, and the bubble (1 -
  // compute / step time) of this stage, in the last step; 0 otherwise.
  int max_in_flight() const;
  double bubble() const;
  // "dp=2,pp=2 (1f1b, 4 micro-batches), stage 0 holds layers [0, 3)".
  std::string describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::train
