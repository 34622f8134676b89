// Pipeline: pipeline parallelism over the ranks of a communicator (the
// pipeline dimension of a DeviceMesh, or the world). A torch::nn::Sequential,
// built the same way on every rank, is cut into contiguous stages (balanced
// by parameter count, or at given cut points); rank s keeps stage s. A step
// splits the batch into micro-batches and runs them through the stages in
// the order of a schedule (pipeline_schedule.h): activations go forward and
// their gradients backward as tagged point-to-point messages; the first of
// a step in each direction is preceded by its shape and dtype (the
// micro-batches are equal chunks, so the others share it), so stages need
// not declare them. The last stage
// computes the loss; gradients accumulate over the micro-batches, so after
// train_step() every stage's parameters hold the gradients of the mean loss
// over the whole batch, as one process would compute them.
//
// Activation recomputation (PipelineOptions::recompute): a stage runs each
// micro-batch's forward without autograd, keeps only its input (and the RNG
// state, so dropout draws the same units), and runs the forward again with
// autograd just before that micro-batch's backward. A stage then holds one
// micro-batch's activations at a time plus the inputs of those in flight,
// for one extra forward per micro-batch.
//
// The data dimension: wrap_backward runs each backward, told whether it is
// the stage's last of the step, so DDP's or ZeRO's no_sync can hold the
// gradients back until the last one, which then averages them over the
// data-parallel ranks while it runs.
//
// Collective over `comm`: every stage calls train_step() with the same
// micro-batch count. Not thread-safe. Each receive is bounded by the
// communicator's timeout (TimeoutError naming the neighbour stage).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/sequential.h>

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/comm/work.h"
#include "tandem/core/trace.h"
#include "tandem/parallel/pipeline_schedule.h"

namespace tandem::parallel {

struct PipelineOptions {
  PipelineScheduleKind schedule = PipelineScheduleKind::k1F1B;
  // Micro-batches per step; the batch's first dimension must divide by it.
  int micro_batches = 4;
  // First layer of each stage (cut_points[0] == 0, increasing, one per
  // stage); empty: balanced_cut_points by parameter count.
  std::vector<int> cut_points;
  // Recompute each micro-batch's activations in its backward (see above).
  bool recompute = false;
  // Runs `backward` (one micro-batch's), `last` true for the stage's final
  // backward of the step; null: runs it.
  std::function<void(bool last, const std::function<void()>& backward)> wrap_backward;
  // When set, each forward and backward is a span "F<mb>" / "B<mb>" (lane
  // "stage"; "R<mb>" for a recomputed forward), and each wait for a
  // neighbour's tensor a span "wait" (lane "comm").
  std::shared_ptr<TraceRecorder> trace;
};

// The loss of a micro-batch on the last stage: (output, target) -> scalar.
// Use a mean over the micro-batch; the pipeline divides by the count.
using PipelineLoss = std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>;

struct PipelineStepStats {
  double loss = 0;      // the batch's mean loss, on every stage
  int max_in_flight = 0;  // micro-batches forwarded, not yet backwarded, at most
  // This stage's wall time in train_step, and the part of it spent
  // computing forwards and backwards (recomputation included); the rest is
  // the bubble and communication: 1 - compute / step.
  double step_seconds = 0;
  double compute_seconds = 0;
};

// Per micro-batch statistics for forward_only on the last stage: (output,
// target) -> a float64 tensor of `PipelineMetric::size` sums (e.g. loss sum,
// correct predictions, count).
struct PipelineMetric {
  int64_t size = 1;
  std::function<at::Tensor(const at::Tensor&, const at::Tensor&)> fn;
};

class Pipeline {
 public:
  // Throws InvalidArgument on bad cut points or a model with fewer layers
  // than stages.
  Pipeline(torch::nn::Sequential model, std::shared_ptr<Communicator> comm,
           const PipelineOptions& options);
  // The stages given as a list, one per rank (stages.size() == comm->size());
  // rank s keeps stages[s]. Throws InvalidArgument on another count, an empty
  // stage, or cut_points (the stages are the cut).
  Pipeline(const std::vector<torch::nn::Sequential>& stages, std::shared_ptr<Communicator> comm,
           PipelineOptions options);
  // Collective (one all-gather of the stages' layer counts). Each rank
  // passes only its own stage, stage s on rank s, which it may build without
  // the rest of the model. The same errors as the list form.
  static Pipeline from_stage(torch::nn::Sequential stage, std::shared_ptr<Communicator> comm,
                             PipelineOptions options);

  // Collective. One forward and backward over `input` (read on the first
  // stage) and `target` (read on the last); the other stages may pass
  // undefined tensors. Zeroes nothing: call zero_grad on the stage's
  // optimizer first, step it after.
  PipelineStepStats train_step(const at::Tensor& input, const at::Tensor& target,
                               const PipelineLoss& loss);

  // Collective. Forwards every micro-batch without autograd and returns the
  // sum over micro-batches of metric.fn on every stage (the last stage
  // computes it, then broadcasts).
  at::Tensor forward_only(const at::Tensor& input, const at::Tensor& target,
                          const PipelineMetric& metric);

  int stage() const { return comm_->rank(); }
  int stages() const { return comm_->size(); }
  // This stage's layers and their parameters.
  torch::nn::Sequential stage_module() const { return stage_; }  // a holder: shares the layers
  std::vector<at::Tensor> parameters() const { return stage_->parameters(); }
  // [first, last) layer indices of the whole model this stage holds.
  std::pair<int, int> layer_range() const { return {first_layer_, last_layer_}; }

 private:
  // Rank s's stage, the stages holding stage_layers[i] layers each.
  Pipeline(torch::nn::Sequential stage, const std::vector<int64_t>& stage_layers,
           std::shared_ptr<Communicator> comm, PipelineOptions options);
  void forward(int micro_batch, const std::vector<at::Tensor>& inputs);
  void backward(int micro_batch, bool last);
  at::Tensor receive_input(int micro_batch, const std::vector<at::Tensor>& inputs);
  // Runs the stage (and the loss on the last stage) on micro-batch mb's input.
  at::Tensor run_stage(int micro_batch, const at::Tensor& x);
  void span(const std::string& name, const char* lane, TraceRecorder::TimePoint start);
  void send_tensor(const at::Tensor& t, int peer, int tag);
  void release_sent();
  void finish_sends();
  // `t` cut into the micro-batches (`needed` on this stage; else empty).
  std::vector<at::Tensor> split(const at::Tensor& t, bool needed, const char* what) const;
  at::Tensor recv_tensor(int peer, int tag);

  std::shared_ptr<Communicator> comm_;
  PipelineOptions options_;
  torch::nn::Sequential stage_;
  int first_layer_ = 0;
  int last_layer_ = 0;
  // Per micro-batch of the step in progress.
  std::vector<at::Tensor> stage_inputs_;   // received activations (requires grad)
  std::vector<at::Tensor> stage_outputs_;  // outputs, or the loss on the last stage
  std::vector<at::Tensor> rng_states_;     // with recompute: the CPU RNG before each forward
  std::vector<at::Tensor> targets_;        // last stage: the micro-batches' targets
  const PipelineLoss* loss_ = nullptr;     // during train_step
  double compute_seconds_ = 0;
  struct PendingSend {
    std::shared_ptr<Work> work;
    at::Tensor buffer;  // alive until the send completes
  };
  std::vector<PendingSend> sends_;
  // This step's shape headers by tag, sent and received (see send_tensor).
  std::map<int, at::Tensor> sent_headers_, received_headers_;
  double loss_sum_ = 0;
};

}  // namespace tandem::parallel
