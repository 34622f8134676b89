// FullyShardedDataParallel (ZeRO stage 3): parameters, gradients and
// optimizer state live as flat 1/N shards. The module's parameters are
// grouped into units (a wrap policy picks submodules; parameters outside
// every unit form the root unit). A unit's parameters are gathered just
// before an operator first reads them, in forward and again in backward, and
// freed once another unit is in use; its gradients are reduce-scattered
// (averaged) into its gradient shard as soon as all of them are ready. After
// the first iteration, the next unit's all-gather is launched while the
// current one computes. The optimizer steps the shards (parameters()).
//
// How "just before" works without forward pre-hooks: see Note [Gather on
// first touch] in src/parallel/fsdp/storage_touch_observer.cpp. The module
// stays unmodified, but:
//  - Every rank must run the same modules in the same order (the gathers are
//    collectives issued in touch order), as with PyTorch's FSDP.
//  - Run forward and backward on the thread that built this object.
//  - Between uses, the module's own parameters are views of empty storage.
//    Read them with full_state_dict(), not directly; build the optimizer over
//    parameters(), not module->parameters(); do not move or cast the module;
//    keep this object alive while the module is used.
//  - A communication failure during forward cannot be thrown from inside an
//    operator: it is logged, and thrown by the next backward (or call here).
//
// Collective: construction, every forward and synchronised backward,
// clip_grad_norm and full_state_dict. Gathers run on the communicator's
// collective lane, reduce-scatters on a second communicator split from it at
// construction, so that each lane's order is the same on every rank whatever
// the timing. Not thread-safe: one training loop per object.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/ordered_dict.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/core/trace.h"
#include "tandem/memory/memory_probe.h"
#include "tandem/parallel/flat_layout.h"
#include "tandem/parallel/fsdp/wrap_policy.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace tandem::parallel {
namespace detail {
class GradReadyHooks;
class StorageTouchObserver;
}  // namespace detail

struct FsdpOptions {
  FsdpWrapPolicy wrap;
  // Launch the next unit's all-gather (in the order recorded in the first
  // iteration) when a unit is touched, so communication overlaps compute.
  // Costs one more unit's gathered parameters at peak. Default on.
  bool prefetch = true;
  // Reduce-scatter a unit's gradients while the next unit's backward runs.
  // Off: a unit starts accumulating its full gradients only once the
  // previous unit's reduce-scatter has finished, so one unit's full
  // gradients are held instead of two, and that reduce-scatter is exposed.
  // Default on.
  bool overlap_reduce_scatter = true;
  // A parameter that gets no gradient in a backward contributes zeros.
  // Off: such a parameter is an error naming it.
  bool find_unused_parameters = false;
  // Copy rank 0's buffers to every rank at construction and after each
  // synchronised backward. false: each rank keeps its own.
  bool broadcast_buffers = true;
  // Timeout of each all-gather and reduce-scatter; default: the
  // communicator's. Must be positive.
  std::optional<Millis> timeout;
  // When set, records each all-gather and reduce-scatter (lanes "comm" and
  // "comm-grad") and the waits for them (lane "compute").
  std::shared_ptr<TraceRecorder> trace;
};

// One unit, for checkpoints: which parameters, how they are laid out in the
// flat vector (entries[k].index is the position in parameter_names), and the
// part this rank owns. The layout does not depend on the world size.
struct FsdpUnitInfo {
  std::string module;                        // submodule path; "" for the root unit
  std::vector<std::string> parameter_names;  // full names, as module->named_parameters()
  FlatLayout layout;
  ShardRange shard;  // shard_range(layout.numel, world_size, rank)
};

class FullyShardedDataParallel {
 public:
  // Collective. Checks that every rank built the same model (InvalidArgument
  // naming the first difference), broadcasts rank 0's parameters and
  // buffers, splits the units, keeps this rank's shard of each and frees the
  // rest, and splits a second communicator for gradients. Throws
  // InvalidArgument naming the option for a bad policy (a type or name that
  // matches nothing, two policies at once), a unit mixing dtypes, a
  // non-CPU parameter or a non-positive timeout; NotSupported for a
  // parameter registered twice (tied weights).
  FullyShardedDataParallel(std::shared_ptr<torch::nn::Module> module,
                           std::shared_ptr<Communicator> comm, FsdpOptions options = {});
  // Waits (bounded by the timeout) for communication in flight.
  ~FullyShardedDataParallel();
  FullyShardedDataParallel(const FullyShardedDataParallel&) = delete;
  FullyShardedDataParallel& operator=(const FullyShardedDataParallel&) = delete;

  // The wrapped module (call its forward as usual).
  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }
  // The flat parameter shards, one per unit, in unit order: leaves that
  // require grad; after a synchronised backward each .grad holds this rank's
  // shard of the averaged gradient (added to what .grad held). Build the
  // optimizer over these.
  std::vector<at::Tensor> parameters() const;
  const std::vector<FsdpUnitInfo>& units() const { return units_; }

  // While the returned guard lives, backward keeps full, unsharded gradients
  // locally (accumulating); the next synchronised backward adds its own and
  // reduce-scatters them. Memory: the full gradients of every unit, one
  // model's worth in the parameters' dtype, between those backwards.
  class NoSyncGuard {
   public:
    explicit NoSyncGuard(FullyShardedDataParallel& fsdp);
    ~NoSyncGuard();
    NoSyncGuard(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(const NoSyncGuard&) = delete;

   private:
    FullyShardedDataParallel& fsdp_;
    bool previous_;
  };
  NoSyncGuard no_sync() { return NoSyncGuard(*this); }

  // Collective. Scales every gradient shard so that the norm of the whole
  // gradient is at most max_norm (> 0); returns the norm before scaling.
  // Blocks for one all-reduce, bounded by the timeout.
  double clip_grad_norm(double max_norm);

  // Collective. The full parameters by name, in module->named_parameters()
  // order (frozen ones included, as they are). Every rank gets a copy: one
  // model's worth of memory. Call between iterations, not inside forward.
  torch::OrderedDict<std::string, at::Tensor> full_state_dict();
  // Local. Overwrites this rank's shards (and frozen parameters) from full
  // parameters by name, as full_state_dict returns them; every rank calls it
  // with the same values. Throws InvalidArgument for a missing name or a
  // wrong shape.
  void load_full_state_dict(const torch::OrderedDict<std::string, at::Tensor>& state);
  // Local. This rank's shard of unit `unit` (a view; read-only use), and
  // overwriting it (`shard` has units()[unit].shard.numel elements).
  const at::Tensor& shard(size_t unit) const;
  void load_shard(size_t unit, const at::Tensor& shard);

  // Frees every gathered unit (waiting, bounded, for gathers in flight).
  // Local; for forward passes without backward (evaluation).
  void reshard();

  // Memory: parameters = shards + gathered full buffers; gradients = shard
  // gradients + full gradients held (one flat buffer per unit); optimizer =
  // the state of the optimizer given here (not owned; it must outlive this
  // object or be reset with nullptr). Sampled at every gather, free and
  // gradient change, so peak() is the real peak; account_optimizer samples
  // too (call it after each optimizer step). Local; throws NotSupported for
  // an optimizer whose state type optimizer_state.h does not know.
  void account_optimizer(const torch::optim::Optimizer* optimizer);
  const memory::MemoryAccounting& memory() const { return memory_.accounting(); }
  void reset_peak_memory() { memory_.reset_peak(); }

  // Figures of the last backward's iteration (from the first gather after
  // the previous backward).
  struct Stats {
    int all_gathers = 0;                      // unit all-gathers issued
    int prefetched = 0;                       // of which launched ahead of use
    int prefetch_hits = 0;                    // uses that found their all-gather done or in flight
    int reduce_scatters_during_backward = 0;  // the rest launched at its end
    int max_gathered_units = 0;
    int64_t max_gathered_bytes = 0;  // full parameters held at once
    double wait_seconds = 0;         // blocked on all-gathers and reduce-scatters
  };
  const Stats& last_stats() const { return last_stats_; }

 private:
  struct Unit;
  enum class State { kFreed, kGathering, kGathered };

  void build_units();
  void shard_units();
  void on_touch(const std::vector<size_t>& units);
  void touch(size_t u, const std::vector<size_t>& in_use);
  void gather_async(size_t u, bool prefetch);
  void wait_gathered(size_t u);
  void free_full(size_t u);
  void grad_ready(size_t param);
  void launch_reduce_scatters();
  void reap_reduce_scatters(bool wait);
  void finish_backward();
  void finish_iteration();
  void abandon_iteration();
  void collect_memory(memory::ModelStateTensors& held) const;
  void rethrow_failure();
  Millis timeout() const;

  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<Communicator> comm_;       // all-gathers, broadcasts, norms
  std::shared_ptr<Communicator> grad_comm_;  // reduce-scatters
  FsdpOptions options_;
  std::vector<at::Tensor> params_;  // trainable, module order
  std::vector<std::string> names_;
  std::vector<FsdpUnitInfo> units_;
  std::vector<std::unique_ptr<Unit>> state_;  // per unit
  std::vector<size_t> unit_of_;               // per parameter
  std::vector<size_t> slot_of_;               // per parameter: position in its unit
  std::vector<size_t> reduce_order_;          // units in reduce-scatter order
  size_t next_reduce_ = 0;
  std::vector<size_t> in_flight_reduces_;  // launched, not yet reaped, in order
  // Touch order of units over the first iteration; prefetch follows it.
  std::vector<size_t> sequence_;
  bool recording_ = true;
  size_t cursor_ = 0;         // position in sequence_ of the current unit
  bool on_sequence_ = false;  // this iteration still follows sequence_
  std::optional<size_t> current_;
  bool sync_enabled_ = true;
  bool in_backward_ = false;
  std::exception_ptr failure_;  // from inside an operator; thrown at the next chance
  Stats stats_, last_stats_;
  const torch::optim::Optimizer* optimizer_ = nullptr;
  memory::MemoryProbe memory_{[this](memory::ModelStateTensors& held) { collect_memory(held); }};
  std::unique_ptr<detail::StorageTouchObserver> observer_;
  std::unique_ptr<detail::GradReadyHooks> grad_hooks_;
};

}  // namespace tandem::parallel
