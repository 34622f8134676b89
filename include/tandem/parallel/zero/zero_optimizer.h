// ZeroRedundancyOptimizer: ZeRO stages 1 and 2 (Rajbhandari et al., 2020)
// for a LibTorch module. Standalone, like DeepSpeed's engine: it averages the
// gradients itself, so the module is not also wrapped in DDP. Every rank
// holds the whole model; optimizer state (stage 1), and gradients too
// (stage 2), are kept for 1/N of the parameters only.
//
// Layout. Parameters are grouped into buckets with BucketPlan (reverse
// registration order, at most bucket_cap_mb each). Each bucket is a
// FlatLayout and one contiguous buffer: the parameters become aliases of it
// (param.set_data; see flat_alias), so the module and its forward are
// unchanged. Rank r owns shard_range(bucket numel, N, r) of every bucket; a
// shard may cross parameter boundaries. The inner optimizer is built by the
// caller's factory over the shard aliases (one per bucket), so it steps only
// the rank's slice, in place, and its state is 1/N of the usual size.
//
// Model-state bytes per parameter with fp32 Adam/AdamW (DDP: 4 + 4 + 8 = 16):
//   stage 1: 4 parameters + 4 gradients + 8/N optimizer state. Gradients are
//            all-reduced bucket by bucket during backward (as DDP), each
//            parameter's .grad being a view into its bucket's flat gradient
//            buffer (no second copy).
//   stage 2: 4 parameters + 4/N gradients + 8/N optimizer state. Each bucket
//            is reduce-scattered as it fills during backward, straight into
//            the rank's gradient shard; the parameters' .grad are released as
//            soon as they are copied into the bucket. Transient: the buckets
//            being filled plus at most kMaxReduceScattersInFlight in flight.
// Traffic per step, per parameter of dtype size s: stage 1 all-reduces
// (2(N-1)/N x s) then all-gathers the updated shards ((N-1)/N x s); stage 2's
// reduce-scatter + all-gather move 2(N-1)/N x s in all, the same bytes as
// DDP's all-reduce. (Stage 1 thus moves 1.5x DDP's bytes.)
//
// Limits: CPU tensors; one parameter group (per-parameter options cannot
// follow flat shards that cross parameters); the optimizer must be one of
// LibTorch's elementwise ones, SGD (momentum, Nesterov), Adam, AdamW, Adagrad
// or RMSprop (OptimizerKind in optimizer_state.h); any other (LBFGS, one of
// your own) is NotSupported, since stepping shards that cut across
// parameters is exact only elementwise.
// After construction the module must not change its parameters' dtype,
// device or storage (no module->to(), no load that replaces tensors; copy_
// into them is fine).
//
// Checkpoints: layouts() and shard_of() say which elements a rank holds;
// flat_parameters() is the whole model on every rank; optimizer_state(b)
// holds bucket b's shard of each state field. Both layouts and shards
// depend only on the parameters and the world size, so a checkpoint can be
// resharded to another world size through the layouts.
//
// Collective: construction, every synchronised backward, step() and
// clip_grad_norm(). Not thread-safe: one training loop per object.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/core/trace.h"
#include "tandem/memory/memory_probe.h"
#include "tandem/parallel/bucket_plan.h"
#include "tandem/parallel/flat_layout.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
class OptimizerParamState;
}  // namespace torch::optim

namespace tandem::parallel {
namespace detail {
class BucketScheduler;
class GradReadyHooks;
}  // namespace detail

// Builds the inner optimizer over the tensors it is given: the rank's shard
// of each bucket, in bucket order, cut into pieces of at most
// ZeroOptions::optimizer_piece_numel elements (leaf tensors aliasing the flat
// parameter buffers, not autograd views; an empty shard is one empty piece).
// It must optimise exactly those tensors, e.g.
//   [](std::vector<at::Tensor> p) {
//     return std::make_unique<torch::optim::AdamW>(p, torch::optim::AdamWOptions(1e-3));
//   }
using OptimizerFactory =
    std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<at::Tensor>)>;

struct ZeroOptions {
  // 1: shard optimizer state; 2: shard optimizer state and gradients.
  // Anything else is InvalidArgument. Default 2: less memory than stage 1 for
  // the same bytes on the wire (it needs full gradients only under no_sync).
  int stage = 2;
  // Largest bucket, in MiB (default 25, as DDP). Smaller buckets start
  // communicating earlier in backward and shrink stage 2's transient, but pay
  // more per-call overhead.
  double bucket_cap_mb = 25.0;
  // A parameter that gets no gradient in a synchronised backward contributes
  // its accumulated .grad (from no_sync micro-batches) or zeros. Off: such a
  // parameter is an error naming it.
  bool find_unused_parameters = false;
  // Copy rank 0's buffers (e.g. BatchNorm running statistics) to every rank
  // at construction and after each synchronised backward.
  bool broadcast_buffers = true;
  // The inner optimizer steps each bucket's shard in pieces of at most this
  // many elements (default 2^20). Optimizers such as Adam and AdamW allocate
  // temporaries the size of each tensor they step (two for AdamW), so this
  // bounds the step's transient memory at about 2 x this x the element size,
  // as per-parameter optimizers are bounded by the largest parameter. Smaller
  // pieces cost more optimizer calls per step. Must be positive.
  int64_t optimizer_piece_numel = int64_t{1} << 20;
  // Timeout of each collective; default: the communicator's. Must be positive.
  std::optional<Millis> timeout;
  // When set, records spans: "backward (hooks)", each bucket's
  // "all_reduce bucket b" / "reduce_scatter bucket b" and "all_gather bucket b"
  // (lane "comm"), "wait for gradients", "optimizer step (shard)" and
  // "wait for all_gather".
  std::shared_ptr<TraceRecorder> trace;
};

class ZeroRedundancyOptimizer {
 public:
  // Stage 2 keeps at most this many launched reduce-scatters in flight
  // during backward; launching one more first waits for the oldest, so
  // the gradient transient stays bounded.
  static constexpr size_t kMaxReduceScattersInFlight = 2;

  // Collective. Checks that every rank has the same trainable parameters
  // (names, shapes, dtypes; InvalidArgument naming the first difference),
  // moves them into flat bucket buffers, broadcasts parameters and buffers
  // from rank 0, builds the inner optimizer with `make_optimizer` and
  // installs the gradient hooks. Existing .grad values are discarded.
  // Throws InvalidArgument for a null argument, a bad option (naming it),
  // a non-CPU parameter, or an optimizer that does not optimise exactly the
  // shards it was given; NotSupported for an optimizer that is not one of
  // the elementwise ones above (naming it and those). Blocks at most the
  // timeout per collective.
  ZeroRedundancyOptimizer(std::shared_ptr<torch::nn::Module> module,
                          std::shared_ptr<Communicator> comm, OptimizerFactory make_optimizer,
                          ZeroOptions options = {});
  // Waits (bounded by the timeout) for collectives still writing its buffers.
  ~ZeroRedundancyOptimizer();
  ZeroRedundancyOptimizer(const ZeroRedundancyOptimizer&) = delete;
  ZeroRedundancyOptimizer& operator=(const ZeroRedundancyOptimizer&) = delete;

  // Collective. Steps the inner optimizer on this rank's shards with the
  // averaged gradients of the last synchronised backward(s), then
  // all-gathers every bucket's updated shards into the flat parameter
  // buffers (all launched, then waited). Blocks until the all-gathers are
  // done or the timeout passes (TimeoutError; PeerError if a rank died).
  void step();

  // Local. Zeroes the gradients: stage 1 the bucket gradient buffers (the
  // parameters' .grad stay views of them), stage 2 the gradient shards and
  // any full .grad left by no_sync backward passes. Call this, not
  // module->zero_grad() or the inner optimizer's.
  void zero_grad();

  // Collective (every rank calls it; stage 2 all-reduces one scalar, stage 1
  // holds the full averaged gradients and computes locally). Returns the
  // 2-norm of the averaged gradients of all parameters and, if it exceeds
  // max_norm, scales them by max_norm / (norm + 1e-6), as
  // torch::nn::utils::clip_grad_norm_. Call between backward and step().
  // Throws InvalidArgument unless max_norm > 0.
  double clip_grad_norm(double max_norm);

  // While the returned guard lives, backward accumulates gradients locally
  // without communicating; the first synchronised backward after it averages
  // the accumulated sums. Stage 1 accumulates in the bucket buffers; stage 2
  // keeps full-size .grad tensors (4 B/param at fp32) until that backward
  // reduce-scatters and releases them, as PyTorch and DeepSpeed do.
  class NoSyncGuard {
   public:
    explicit NoSyncGuard(ZeroRedundancyOptimizer& zero);
    ~NoSyncGuard();
    NoSyncGuard(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(const NoSyncGuard&) = delete;

   private:
    ZeroRedundancyOptimizer& zero_;
    bool previous_;
  };
  NoSyncGuard no_sync() { return NoSyncGuard(*this); }

  // ---- access for the trainer and for sharded checkpoints ----

  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }
  int stage() const { return options_.stage; }
  // The inner optimizer: set the learning rate through
  // optimizer().param_groups()[0].options().set_lr(...). Its parameters are
  // optimizer_pieces(b) of every bucket b, in bucket order; its state() is
  // keyed as LibTorch keys it, by each piece's unsafeGetTensorImpl().
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  const torch::optim::Optimizer& optimizer() const { return *optimizer_; }
  // Trainable parameters in registration order; FlatLayout::Entry::index and
  // BucketPlan indices refer to this list.
  const std::vector<std::string>& parameter_names() const { return names_; }
  const BucketPlan& bucket_plan() const { return plan_; }
  // One layout per bucket, independent of the world size.
  const std::vector<FlatLayout>& layouts() const { return layouts_; }
  size_t bucket_count() const { return layouts_.size(); }
  // This rank's slice of bucket b: shard_range(layouts()[b].numel, N, rank).
  ShardRange shard_of(size_t bucket) const;
  // Bucket accessors; a bucket index out of range is InvalidArgument.
  // The whole flat parameter buffer of bucket b (the parameters alias it).
  const at::Tensor& flat_parameters(size_t bucket) const;
  // This rank's shard of it (an alias).
  const at::Tensor& parameter_shard(size_t bucket) const;
  // The shard cut into the pieces the inner optimizer steps (aliases, in
  // order; their .grad alias gradient_shard's matching slices).
  const std::vector<at::Tensor>& optimizer_pieces(size_t bucket) const;
  // The averaged gradient of this rank's shard after a synchronised
  // backward (stage 1: an alias of the bucket gradient buffer).
  const at::Tensor& gradient_shard(size_t bucket) const;
  // The inner optimizer's state for piece `piece` of bucket b's shard
  // (downcast to AdamWParamState etc.), or nullptr before the first step
  // creates it. A piece index out of range is InvalidArgument.
  torch::optim::OptimizerParamState* optimizer_state(size_t bucket, size_t piece = 0);

  // Model-state bytes this rank really holds (storages, views once):
  // parameters = the flat buffers; gradients = bucket gradient buffers
  // (stage 1) or gradient shards plus staging buffers and any live .grad
  // (stage 2); optimizer = the inner optimizer's state. Sampled at
  // construction, as each backward begins (under an armed
  // ActivationTracker), at each staging buffer's allocation and bucket
  // launch during backward (stage 2's transient peak), at the end of each
  // synchronised backward and after each step().
  const memory::MemoryAccounting& memory() const { return memory_.accounting(); }

  // Per-iteration figures of the last synchronised backward and step.
  struct Stats {
    int buckets_launched_during_backward = 0;  // the rest launched at its end
    double wait_seconds = 0;                   // end of backward, waiting for gradients
    double all_gather_seconds = 0;             // step(), waiting for the all-gathers
  };
  const Stats& last_stats() const { return stats_; }

 private:
  struct Bucket;
  const Bucket& bucket_at(size_t bucket) const;
  void build_buckets();
  void build_optimizer(const OptimizerFactory& make_optimizer);
  void mark_ready(size_t param);
  void begin_backward();
  void mark_again(size_t param);
  void stage_gradient(size_t param, bool add);
  void launch_ready_buckets();
  void launch_bucket(size_t bucket);
  void finish_launched(size_t bucket);
  void throttle_in_flight(size_t limit, size_t launching);
  void finish_backward(uint64_t backward);
  std::vector<std::string> fill_unready();
  void reset_iteration();
  void abandon_iteration();
  void collect_memory(memory::ModelStateTensors& held) const;
  Millis wait_timeout() const;

  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<Communicator> comm_;
  ZeroOptions options_;
  std::vector<at::Tensor> params_;
  std::vector<std::string> names_;
  BucketPlan plan_;
  std::vector<FlatLayout> layouts_;
  std::vector<Bucket> buckets_;
  std::vector<at::Tensor> grad_views_;  // stage 1: per parameter, its slice of the gradient buffer
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<detail::BucketScheduler> scheduler_;  // ready parameters, launched buckets
  size_t oldest_in_flight_ = 0;  // first launched bucket not finished yet
  bool sync_enabled_ = true;
  std::string deferred_error_;  // found in a hook, thrown at the end of backward
  TraceRecorder::TimePoint first_hook_at_;
  Stats stats_;
  memory::MemoryProbe memory_{[this](memory::ModelStateTensors& held) { collect_memory(held); }};
  std::unique_ptr<detail::GradReadyHooks> hooks_;
};

}  // namespace tandem::parallel
