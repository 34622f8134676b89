// DistributedDataParallel: makes a LibTorch module data-parallel. Every rank
// holds a replica; after loss.backward() returns, every parameter's .grad
// holds the average of the ranks' gradients.
//
// How: gradients are packed into flat buckets (BucketPlan, reverse
// registration order, at most bucket_cap_mb each). A hook on each
// parameter's gradient accumulator copies its gradient into the bucket once
// autograd has accumulated it; when a bucket is full it is all-reduced
// asynchronously while backward goes on, and buckets launch strictly in
// bucket order so that every rank issues the same collectives (the bucket
// scheduler ZeroRedundancyOptimizer shares). At the end of
// backward (an autograd final callback) DDP waits for what is still in
// flight and copies the averages back into .grad. No per-parameter
// all-reduce.
//
// Compression (DdpOptions::compression): kFp16/kBf16 send each bucket as
// 16-bit floats. kPowerSgd replaces each matrix-shaped gradient M (n x m) by
// a rank-r approximation of the ranks' average (see powersgd.h): per bucket,
// one all-reduce of the uncompressed gradients (1-D ones, and matrices too
// small to gain), one of all the P's (n x r each) and one of all the Q's
// (m x r each), so a matrix costs (n + m) * r elements instead of n * m, with
// per-rank error feedback. The P all-reduces overlap backward like plain
// buckets; the Q step waits for P and runs in the final callback (see Note
// [PowerSGD schedule] in the .cpp). The first start_powersgd_iter
// synchronised backwards use plain all-reduce, bitwise as kNone. PowerSGD
// state (Q, error feedback) is not checkpointed: a new object starts over.
//
// Collective: construction and every synchronised backward. Not
// thread-safe: one training loop per object.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/core/trace.h"
#include "tandem/memory/memory_probe.h"
#include "tandem/parallel/bucket_plan.h"
#include "tandem/parallel/ddp/powersgd.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace tandem::parallel {
namespace detail {
class BucketScheduler;
class GradReadyHooks;
class PowerSgdReducer;
}  // namespace detail

enum class GradCompression {
  kNone,      // all-reduce in the parameters' dtype
  kFp16,      // send float16 (halves the bytes; ~3 significant digits)
  kBf16,      // send bfloat16 (halves the bytes; float32's range, ~2 digits)
  kPowerSgd,  // low-rank PowerSGD (DdpOptions::powersgd); float32/float64 only
};

struct DdpOptions {
  // Largest bucket, in MiB (default 25, as PyTorch). Smaller buckets start
  // communicating earlier in backward but pay more per-call overhead.
  double bucket_cap_mb = 25.0;
  // A parameter that gets no gradient in an iteration contributes zeros
  // instead of leaving its bucket unlaunched. Off: such a parameter is an
  // error naming it (as PyTorch, minus the hang).
  bool find_unused_parameters = false;
  // Copy rank 0's buffers (e.g. BatchNorm running statistics, a bool mask)
  // to every rank at construction and after each synchronised backward, so
  // the next forward starts equal. false: each rank keeps its own, as in
  // PyTorch.
  bool broadcast_buffers = true;
  GradCompression compression = GradCompression::kNone;
  // Read only with compression == kPowerSgd; checked at construction
  // (InvalidArgument naming the field).
  PowerSgdOptions powersgd;

  // Each parameter's .grad is an alias of its slice of the bucket buffer, so
  // gradients cost their bytes once (PyTorch's gradient_as_bucket_view):
  // autograd accumulates in place and the all-reduce averages in place.
  // Off (default, as PyTorch): .grad and the buckets are separate copies (2x
  // gradient bytes). Replacing .grad (module->zero_grad(true)) is allowed:
  // the next synchronised backward copies it back and re-aliases.
  bool gradient_as_bucket_view = false;
  // Timeout of each bucket's all-reduce; default: the communicator's.
  std::optional<Millis> timeout;
  // When set, each synchronised backward records spans: "backward (hooks)"
  // from the first gradient to the end of backward, each bucket's all-reduce
  // from launch to completion (lane "comm"), and the wait at the end. With
  // PowerSGD a bucket records "powersgd P bucket B", "powersgd Q bucket B"
  // and "all_reduce bucket B (uncompressed part)" instead.
  std::shared_ptr<TraceRecorder> trace;
};

class DistributedDataParallel {
 public:
  // Collective. Checks that every rank has the same parameter names, shapes
  // and dtypes (InvalidArgument naming the first difference and the ranks),
  // broadcasts parameters and buffers from rank 0, and installs the hooks.
  // With kPowerSgd, bad PowerSgdOptions throw InvalidArgument before any
  // collective, and a bucket to compress that is not float32/float64 throws
  // NotSupported.
  DistributedDataParallel(std::shared_ptr<torch::nn::Module> module,
                          std::shared_ptr<Communicator> comm, DdpOptions options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // The wrapped module (call its forward as usual).
  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }
  const BucketPlan& bucket_plan() const { return plan_; }
  const std::vector<std::string>& parameter_names() const { return names_; }

  // While the returned guard lives, backward accumulates gradients locally
  // without communicating (gradient accumulation); the first backward after
  // it averages the accumulated sums.
  class NoSyncGuard {
   public:
    explicit NoSyncGuard(DistributedDataParallel& ddp);
    ~NoSyncGuard();
    NoSyncGuard(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(const NoSyncGuard&) = delete;

   private:
    DistributedDataParallel& ddp_;
    bool previous_;
  };
  NoSyncGuard no_sync() { return NoSyncGuard(*this); }

  // Per-iteration figures of the last synchronised backward.
  struct Stats {
    int buckets_launched_during_backward = 0;  // the rest launched at its end
    double wait_seconds = 0;  // time at the end of backward spent waiting for all-reduces
    // Bytes this rank handed to all-reduce: the reduced tensors' sizes (the
    // 16-bit copies with kFp16/kBf16; the uncompressed part, P's and Q's with
    // PowerSGD). The backend's traffic is a multiple of it that depends on its
    // algorithm (a ring sends about 2 (N-1)/N times it).
    int64_t all_reduce_bytes = 0;
    // What kNone hands over for the same step: every bucket in its dtype.
    int64_t uncompressed_bytes = 0;
    bool powersgd = false;  // this backward was compressed with PowerSGD
  };
  const Stats& last_stats() const { return stats_; }

  // With kPowerSgd: parameter `param`'s error-feedback residual (its index in
  // parameter_names(); shaped like it): what the last compressed step left
  // out of this rank's gradient plus carried error, M - P Q^T. Undefined when
  // the parameter is not compressed, use_error_feedback is off, or no
  // compressed step ran yet. Throws InvalidArgument for a bad index or
  // without kPowerSgd. The tensor is live state: clone it to keep it.
  at::Tensor powersgd_error(size_t param) const;

  // Model-state bytes this rank holds (storages, views once): parameters,
  // gradients (.grad plus bucket buffers) and the optimizer state last
  // passed to sample_memory (DDP does not own the optimizer). Sampled at the
  // end of every synchronised backward, as it begins under an armed
  // ActivationTracker, and by sample_memory().
  const memory::MemoryAccounting& memory() const { return memory_.accounting(); }
  // Local. Records a sample now, counting `optimizer`'s state if given
  // (e.g. after optimizer.step()). Throws NotSupported for an optimizer
  // whose state type optimizer_state.h does not know.
  void sample_memory(const torch::optim::Optimizer* optimizer = nullptr);

 private:
  void broadcast_state();
  void broadcast_buffers();  // rank 0's buffers to every rank (collective)
  void mark_ready(size_t param);
  void begin_backward();
  void launch_ready_buckets();
  void launch_bucket(size_t b);
  void finish_backward();
  void fill_unused();
  void wait_buckets();     // plain and 16-bit buckets
  void finish_powersgd();  // See Note [PowerSGD schedule]
  void reset_iteration();
  at::Tensor grad_alias(size_t param) const;  // gradient_as_bucket_view: .grad's slice
  void collect_memory(memory::ModelStateTensors& held) const;

  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<Communicator> comm_;
  DdpOptions options_;
  std::vector<at::Tensor> params_;
  std::vector<std::string> names_;
  BucketPlan plan_;
  std::vector<at::Tensor> buffers_;  // one flat buffer per bucket
  std::vector<at::Tensor> wire_;     // compressed copies in flight
  std::unique_ptr<detail::BucketScheduler> scheduler_;  // ready parameters, launched buckets
  std::vector<std::shared_ptr<Work>> works_;
  std::vector<TraceRecorder::TimePoint> launched_at_;  // per bucket, when traced
  TraceRecorder::TimePoint first_hook_at_;
  bool sync_enabled_ = true;
  Stats stats_;
  int64_t optimizer_bytes_ = 0;  // as last measured by sample_memory
  memory::MemoryProbe memory_{[this](memory::ModelStateTensors& held) { collect_memory(held); }};
  std::unique_ptr<detail::GradReadyHooks> hooks_;
  // Last, so it is destroyed first: its in-flight all-reduces may write buffers_.
  std::unique_ptr<detail::PowerSgdReducer> powersgd_;
  bool powersgd_now_ = false;  // this backward compresses
};

}  // namespace tandem::parallel
