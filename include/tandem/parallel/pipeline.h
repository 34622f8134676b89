// Pipeline: pipeline parallelism over the ranks of a communicator (the
// pipeline dimension of a DeviceMesh, or the world). A torch::nn::Sequential,
// built the same way on every rank, is cut into contiguous stages (balanced
// by parameter count, or at given cut points); rank s keeps stage s. A step
// splits the batch into micro-batches and runs them through the stages in
// the order of a schedule (pipeline_schedule.h): activations go forward and
// their gradients backward as tagged point-to-point messages, each preceded
// by its shape and dtype, so stages need not declare them. The last stage
// computes the loss; gradients accumulate over the micro-batches, so after
// train_step() every stage's parameters hold the gradients of the mean loss
// over the whole batch, as one process would compute them.
//
// Collective over `comm`: every stage calls train_step() with the same
// micro-batch count. Not thread-safe. Each receive is bounded by the
// communicator's timeout (TimeoutError naming the neighbour stage).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/sequential.h>

#include <functional>
#include <memory>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/comm/work.h"
#include "tandem/parallel/pipeline_schedule.h"

namespace tandem::parallel {

struct PipelineOptions {
  PipelineScheduleKind schedule = PipelineScheduleKind::k1F1B;
  // Micro-batches per step; the batch's first dimension must divide by it.
  int micro_batches = 4;
  // First layer of each stage (cut_points[0] == 0, increasing, one per
  // stage); empty: balanced_cut_points by parameter count.
  std::vector<int> cut_points;
};

// The loss of a micro-batch on the last stage: (output, target) -> scalar.
// Use a mean over the micro-batch; the pipeline divides by the count.
using PipelineLoss = std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>;

struct PipelineStepStats {
  double loss = 0;      // the batch's mean loss, on every stage
  int max_in_flight = 0;  // micro-batches forwarded, not yet backwarded, at most
};

class Pipeline {
 public:
  // Collective. Throws InvalidArgument on bad cut points or a model with
  // fewer layers than stages.
  Pipeline(torch::nn::Sequential model, std::shared_ptr<Communicator> comm,
           PipelineOptions options);

  // Collective. One forward and backward over `input` (read on the first
  // stage) and `target` (read on the last); the other stages may pass
  // undefined tensors. Zeroes nothing: call zero_grad on the stage's
  // optimizer first, step it after.
  PipelineStepStats train_step(const at::Tensor& input, const at::Tensor& target,
                               const PipelineLoss& loss);

  int stage() const { return comm_->rank(); }
  int stages() const { return comm_->size(); }
  // This stage's layers and their parameters.
  torch::nn::Sequential stage_module() const { return stage_; }  // a holder: shares the layers
  std::vector<at::Tensor> parameters() const { return stage_->parameters(); }
  // [first, last) layer indices of the whole model this stage holds.
  std::pair<int, int> layer_range() const { return {first_layer_, last_layer_}; }

 private:
  void forward(int micro_batch, const std::vector<at::Tensor>& inputs,
               const std::vector<at::Tensor>& targets, const PipelineLoss& loss);
  void backward(int micro_batch);
  void send_tensor(const at::Tensor& t, int peer, int tag);
  void release_sent();
  at::Tensor recv_tensor(int peer, int tag);

  std::shared_ptr<Communicator> comm_;
  PipelineOptions options_;
  torch::nn::Sequential stage_;
  int first_layer_ = 0;
  int last_layer_ = 0;
  // Per micro-batch of the step in progress.
  std::vector<at::Tensor> stage_inputs_;   // received activations (requires grad)
  std::vector<at::Tensor> stage_outputs_;  // outputs, or the loss on the last stage
  struct PendingSend {
    std::shared_ptr<Work> work;
    at::Tensor buffer;  // alive until the send completes
  };
  std::vector<PendingSend> sends_;
  double loss_sum_ = 0;
};

}  // namespace tandem::parallel
