#include "tandem/parallel/zero/zero_optimizer.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <cmath>

#include "parallel/detail/bucket_scheduler.h"
#include "parallel/detail/grad_hooks.h"
#include "parallel/detail/replicas.h"
#include "parallel/zero/bucket.h"
#include "tandem/core/check.h"
#include "tandem/memory/storage_set.h"
#include "tandem/parallel/optimizer_state.h"

namespace tandem::parallel {
namespace {

void check_options(const ZeroOptions& o) {
  TANDEM_CHECK(o.stage == 1 || o.stage == 2,
               "ZeroOptions::stage must be 1 or 2 (got {}); for stage 3 use "
               "FullyShardedDataParallel",
               o.stage);
  TANDEM_CHECK(o.bucket_cap_mb > 0 && std::isfinite(o.bucket_cap_mb),
               "ZeroOptions::bucket_cap_mb must be positive (got {})", o.bucket_cap_mb);
  TANDEM_CHECK(o.optimizer_piece_numel > 0,
               "ZeroOptions::optimizer_piece_numel must be positive (got {})",
               o.optimizer_piece_numel);
  TANDEM_CHECK(!o.timeout || o.timeout->count() > 0,
               "ZeroOptions::timeout must be positive (got {} ms)",
               o.timeout ? o.timeout->count() : 0);
}

}  // namespace

ZeroRedundancyOptimizer::ZeroRedundancyOptimizer(std::shared_ptr<torch::nn::Module> module,
                                                 std::shared_ptr<Communicator> comm,
                                                 OptimizerFactory make_optimizer,
                                                 ZeroOptions options)
    : module_(std::move(module)), comm_(std::move(comm)), options_(std::move(options)) {
  TANDEM_CHECK(module_ != nullptr, "ZeroRedundancyOptimizer: the module is null");
  TANDEM_CHECK(comm_ != nullptr, "ZeroRedundancyOptimizer: the communicator is null");
  TANDEM_CHECK(make_optimizer != nullptr,
               "ZeroRedundancyOptimizer: the optimizer factory is empty");
  check_options(options_);
  // Frozen parameters stay replicated, never updated.
  auto [names, params] =
      detail::trainable_parameters(*module_, "ZeroRedundancyOptimizer", "shards");
  names_ = std::move(names);
  params_ = std::move(params);
  detail::check_replicas_match(*comm_, names_, params_, "ZeroRedundancyOptimizer");
  build_buckets();
  {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> flats;
    for (const auto& b : buckets_) flats.push_back(b.params);
    detail::broadcast_from_rank0(*comm_, flats, options_.timeout);
    if (options_.broadcast_buffers) {
      detail::broadcast_buffers_from_rank0(*comm_, *module_, options_.timeout,
                                           "ZeroRedundancyOptimizer");
    }
  }
  build_optimizer(make_optimizer);
  scheduler_ = std::make_unique<detail::BucketScheduler>(plan_);
  hooks_ = std::make_unique<detail::GradReadyHooks>(params_, [this](size_t i) { mark_ready(i); });
  memory_.at(memory::MemoryPoint::kConstructed);
}

ZeroRedundancyOptimizer::~ZeroRedundancyOptimizer() {
  hooks_.reset();
  for (auto& b : buckets_) {
    if (!b.work) continue;
    try {
      b.work->wait(wait_timeout());  // it writes this object's buffers
    } catch (const std::exception&) {
      // already reported to the backward that launched it
    }
  }
}

// Moves every parameter into its bucket's flat buffer (the parameter
// becomes an alias of it) and sets up the gradient storage of the stage.
void ZeroRedundancyOptimizer::build_buckets() {
  const double cap = options_.bucket_cap_mb * 1024.0 * 1024.0;
  plan_ = make_bucket_plan(params_, std::max<int64_t>(1, static_cast<int64_t>(cap)));
  grad_views_.resize(params_.size());
  at::NoGradGuard no_grad;
  for (const auto& spec : plan_.buckets) {
    FlatLayout layout = make_flat_layout(params_, spec.params);
    const auto options = at::TensorOptions().dtype(layout.dtype);
    Bucket b;
    b.shard = shard_range(layout.numel, comm_->size(), comm_->rank());
    b.params = at::empty({layout.numel}, options);
    copy_range_out(layout, params_, {0, layout.numel}, b.params);
    if (options_.stage == 1) b.grads = at::zeros({layout.numel}, options);
    for (const auto& e : layout.entries) {
      at::Tensor& p = params_[e.index];
      p.set_data(flat_alias(b.params, e.offset, e.shape));
      if (options_.stage == 1) {
        grad_views_[e.index] = flat_alias(b.grads, e.offset, e.shape);
        p.mutable_grad() = grad_views_[e.index];
      } else {
        p.mutable_grad().reset();
      }
    }
    b.param_shard = flat_alias(b.params, b.shard.offset, {b.shard.numel});
    b.grad_shard = options_.stage == 1 ? flat_alias(b.grads, b.shard.offset, {b.shard.numel})
                                       : at::zeros({b.shard.numel}, options);
    b.param_shard.mutable_grad() = b.grad_shard;
    // The pieces alias the shard (and their .grad the gradient shard), so
    // stepping them steps the shard; an empty shard is one empty piece.
    const int64_t piece = options_.optimizer_piece_numel;
    const int64_t count = std::max<int64_t>(1, (b.shard.numel + piece - 1) / piece);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t numel = std::min(piece, b.shard.numel - i * piece);
      at::Tensor t = flat_alias(b.params, b.shard.offset + i * piece, {numel});
      t.mutable_grad() = flat_alias(b.grad_shard, i * piece, {numel});
      b.pieces.push_back(std::move(t));
    }
    layouts_.push_back(std::move(layout));
    buckets_.push_back(std::move(b));
  }
}

void ZeroRedundancyOptimizer::build_optimizer(const OptimizerFactory& make_optimizer) {
  std::vector<at::Tensor> shards;
  for (const auto& b : buckets_) shards.insert(shards.end(), b.pieces.begin(), b.pieces.end());
  optimizer_ = make_optimizer(shards);
  TANDEM_CHECK(optimizer_ != nullptr,
               "ZeroRedundancyOptimizer: the optimizer factory returned null");
  const auto& groups = optimizer_->param_groups();
  bool same = groups.size() == 1 && groups[0].params().size() == shards.size();
  for (size_t i = 0; same && i < shards.size(); ++i) {
    same = groups[0].params()[i].unsafeGetTensorImpl() == shards[i].unsafeGetTensorImpl();
  }
  size_t count = 0;
  for (const auto& g : groups) count += g.params().size();
  TANDEM_CHECK(same,
               "ZeroRedundancyOptimizer: the optimizer must optimise exactly the {} shard tensors "
               "the factory is given, in one parameter group, but it holds {} tensors in {} "
               "group(s); build it from the factory's argument, not from module->parameters()",
               shards.size(), count, groups.size());
  if (!known_kind(*optimizer_)) {
    throw NotSupported(fmt::format(
        "ZeroRedundancyOptimizer: the optimizer is {}; ZeRO steps each rank's flat shards, which "
        "cut across parameters, and that is exact only for the elementwise optimizers it knows: "
        "{}",
        type_name(*optimizer_), known_optimizers()));
  }
}

Millis ZeroRedundancyOptimizer::wait_timeout() const {
  return options_.timeout.value_or(comm_->timeout());
}

// ---- access ----

const ZeroRedundancyOptimizer::Bucket& ZeroRedundancyOptimizer::bucket_at(size_t bucket) const {
  TANDEM_CHECK(bucket < buckets_.size(), "ZeroRedundancyOptimizer: bucket {} but there are {}",
               bucket, buckets_.size());
  return buckets_[bucket];
}
ShardRange ZeroRedundancyOptimizer::shard_of(size_t bucket) const {
  return bucket_at(bucket).shard;
}
const at::Tensor& ZeroRedundancyOptimizer::flat_parameters(size_t bucket) const {
  return bucket_at(bucket).params;
}
const at::Tensor& ZeroRedundancyOptimizer::parameter_shard(size_t bucket) const {
  return bucket_at(bucket).param_shard;
}
const at::Tensor& ZeroRedundancyOptimizer::gradient_shard(size_t bucket) const {
  return bucket_at(bucket).grad_shard;
}

const std::vector<at::Tensor>& ZeroRedundancyOptimizer::optimizer_pieces(size_t bucket) const {
  return bucket_at(bucket).pieces;
}

torch::optim::OptimizerParamState* ZeroRedundancyOptimizer::optimizer_state(size_t bucket,
                                                                            size_t piece) {
  const auto& pieces = bucket_at(bucket).pieces;
  TANDEM_CHECK(piece < pieces.size(),
               "ZeroRedundancyOptimizer: bucket {} has {} optimizer pieces, not piece {}", bucket,
               pieces.size(), piece);
  return find_param_state(*optimizer_, pieces[piece]);
}

// What the rank holds: the flat buffers (the parameters alias them: no more
// bytes, but left out of the activations), the gradient buffers and shards
// and any live .grad, and the inner optimizer's state.
void ZeroRedundancyOptimizer::collect_memory(memory::ModelStateTensors& held) const {
  for (const auto& b : buckets_) held.parameters.push_back(b.params);
  held.parameters.insert(held.parameters.end(), params_.begin(), params_.end());
  held.gradients = memory::gradients_of(params_);
  for (const auto& b : buckets_) {
    held.gradients.insert(held.gradients.end(), {b.grads, b.grad_shard, b.received});
  }
  held.optimizer_state = optimizer_state_tensors(*optimizer_);
}

ZeroRedundancyOptimizer::NoSyncGuard::NoSyncGuard(ZeroRedundancyOptimizer& zero)
    : zero_(zero), previous_(zero.sync_enabled_) {
  zero_.sync_enabled_ = false;
}

ZeroRedundancyOptimizer::NoSyncGuard::~NoSyncGuard() { zero_.sync_enabled_ = previous_; }

}  // namespace tandem::parallel
