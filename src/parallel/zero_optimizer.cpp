#include "tandem/parallel/zero_optimizer.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/util/string_utils.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "parallel/detail/grad_hooks.h"
#include "parallel/detail/replicas.h"
#include "tandem/core/check.h"
#include "tandem/parallel/activation_tracker.h"

namespace tandem::parallel {

// One bucket's tensors. Stage 1: `grads` is the permanent flat gradient
// buffer and grad_shard a view of it. Stage 2: `grads` is the staging buffer
// of one backward (allocated at the bucket's first gradient, released once
// its reduce-scatter is done) and grad_shard the rank's own tensor.
struct ZeroRedundancyOptimizer::Bucket {
  ShardRange shard;
  at::Tensor params;       // flat parameter buffer; the parameters alias it
  at::Tensor param_shard;  // alias of params over `shard`
  std::vector<at::Tensor> pieces;  // param_shard cut for the inner optimizer
  at::Tensor grads;
  at::Tensor grad_shard;
  at::Tensor received;        // stage 2: reduce-scatter output when grad_shard already holds a sum
  bool shard_is_zero = true;  // stage 2: the reduce-scatter may overwrite grad_shard
  int64_t pending = 0;        // parameters not yet ready this iteration
  std::shared_ptr<Work> work;
  TraceRecorder::TimePoint launched_at;
};

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

// True if `grad` is exactly the tensor `alias` describes (same memory, shape).
bool same_memory(const at::Tensor& grad, const at::Tensor& alias) {
  return grad.defined() && grad.is_alias_of(alias) && grad.data_ptr() == alias.data_ptr() &&
         grad.sizes() == alias.sizes() && grad.strides() == alias.strides();
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
  for (const auto& item : module_->named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;  // frozen: replicated, never updated
    TANDEM_CHECK(item.value().device().is_cpu(),
                 "ZeroRedundancyOptimizer: parameter '{}' is on {}; this build shards CPU tensors",
                 item.key(), item.value().device().str());
    names_.push_back(item.key());
    params_.push_back(item.value());
  }
  detail::check_replicas_match(*comm_, names_, params_, "ZeroRedundancyOptimizer");
  build_buckets();
  {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> flats;
    for (const auto& b : buckets_) flats.push_back(b.params);
    detail::broadcast_from_rank0(*comm_, flats, options_.timeout);
    if (options_.broadcast_buffers) {
      detail::broadcast_from_rank0(*comm_, module_->buffers(/*recurse=*/true), options_.timeout);
    }
  }
  build_optimizer(make_optimizer);
  reset_iteration();
  hooks_ = std::make_unique<detail::GradReadyHooks>(params_, [this](size_t i) { mark_ready(i); });
  sample_memory();
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
  std::vector<int64_t> numels;
  std::vector<at::ScalarType> dtypes;
  for (const auto& p : params_) {
    numels.push_back(p.numel());
    dtypes.push_back(p.scalar_type());
  }
  const double cap = options_.bucket_cap_mb * 1024.0 * 1024.0;
  plan_ = make_bucket_plan(numels, dtypes, std::max<int64_t>(1, static_cast<int64_t>(cap)));
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
}

Millis ZeroRedundancyOptimizer::wait_timeout() const {
  return options_.timeout.value_or(comm_->timeout());
}

void ZeroRedundancyOptimizer::reset_iteration() {
  for (size_t b = 0; b < buckets_.size(); ++b) {
    buckets_[b].pending = static_cast<int64_t>(plan_.buckets[b].params.size());
  }
  ready_.assign(params_.size(), false);
  next_bucket_ = 0;
  oldest_in_flight_ = 0;
  callback_queued_ = false;
  in_backward_ = false;
  deferred_error_.clear();
}

// After a failure: forget what is in flight (each Work keeps its tensors
// alive and ends by its deadline) and drop the staging buffers.
void ZeroRedundancyOptimizer::abandon_iteration() {
  for (auto& b : buckets_) {
    b.work.reset();
    if (options_.stage == 2) {
      b.grads = at::Tensor();
      b.received = at::Tensor();
    }
  }
  reset_iteration();
}

// ---- backward: see Note [ZeRO gradient hooks] ----

// Note [ZeRO gradient hooks]
// The hook runs after autograd has accumulated params[i].grad (backward runs
// with grad mode off, so an existing .grad is added to in place).
//  - Stage 1: .grad is an alias of the bucket gradient buffer, so there is
//    nothing to copy. If the caller replaced it (module->zero_grad(true),
//    create_graph), the hook copies it into the buffer and re-aliases .grad.
//  - Stage 2: the hook copies .grad into the bucket's staging buffer and
//    resets .grad to undefined. Resetting (not freeing its storage) is what
//    stops autograd accumulating into a released tensor: the next backward
//    finds no .grad and hands over a fresh one. Under no_sync the hook does
//    nothing, so .grad accumulates at full size until the next synchronised
//    backward copies the sum.
// Buckets launch strictly in bucket order, whatever order they fill in, so
// every rank issues the same collectives.
void ZeroRedundancyOptimizer::mark_ready(size_t param) {
  if (!sync_enabled_) return;
  try {
    if (!callback_queued_) {
      callback_queued_ = true;
      in_backward_ = true;
      stats_.buckets_launched_during_backward = 0;
      stats_.wait_seconds = 0;
      first_hook_at_ = std::chrono::steady_clock::now();
      const uint64_t iteration = ++iteration_;
      detail::at_end_of_backward([this, iteration] { finish_backward(iteration); });
      // Backward has just begun: nearly every activation is alive.
      if (ActivationTracker::current() != nullptr) sample_memory();
    }
    const size_t b = plan_.bucket_of[param];
    if (ready_[param]) {
      // A second accumulation in one backward (reentrant backward).
      if (b < next_bucket_ && deferred_error_.empty()) {
        deferred_error_ = fmt::format(
            "rank {}: ZeroRedundancyOptimizer: the gradient of '{}' arrived twice in one "
            "backward, after its bucket {} was already being reduced; reentrant backward "
            "(e.g. activation checkpointing) is not supported",
            comm_->rank(), names_[param], b);
      } else if (b >= next_bucket_) {
        stage_gradient(param, /*add=*/true);
      }
      return;
    }
    ready_[param] = true;
    stage_gradient(param, /*add=*/false);
    if (--buckets_[b].pending == 0) launch_ready_buckets();
  } catch (...) {
    abandon_iteration();  // autograd will not run the end-of-backward callback
    throw;
  }
}

// Puts params[param]'s gradient where its bucket's collective reads it (see
// Note [ZeRO gradient hooks]). A missing .grad counts as zeros.
void ZeroRedundancyOptimizer::stage_gradient(size_t param, bool add) {
  at::NoGradGuard no_grad;
  at::Tensor& grad = params_[param].mutable_grad();
  if (options_.stage == 1) {
    const at::Tensor& view = grad_views_[param];
    if (!grad.defined()) {
      view.zero_();
      grad = view;
    } else if (!same_memory(grad, view)) {
      view.copy_(grad);
      grad = view;
    }
    return;
  }
  const size_t b = plan_.bucket_of[param];
  Bucket& bucket = buckets_[b];
  const FlatLayout::Entry& e = layouts_[b].entries[plan_.slot_of[param]];
  if (!bucket.grads.defined()) {
    bucket.grads = at::empty({layouts_[b].numel}, at::TensorOptions().dtype(layouts_[b].dtype));
    sample_memory();  // a new staging buffer beside the live activations and .grad
  }
  at::Tensor slot = bucket.grads.narrow(0, e.offset, e.numel);
  if (!grad.defined()) {
    if (!add) slot.zero_();
  } else if (add) {
    slot.add_(grad.reshape({-1}));
  } else {
    slot.copy_(grad.reshape({-1}));
  }
  grad.reset();
}

void ZeroRedundancyOptimizer::launch_ready_buckets() {
  while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].pending == 0) {
    const size_t b = next_bucket_;
    Bucket& bucket = buckets_[b];
    if (options_.stage == 2) throttle_in_flight(kMaxReduceScattersInFlight - 1);
    // Stamped before the launch: a small collective can finish before the call returns.
    if (options_.trace) bucket.launched_at = std::chrono::steady_clock::now();
    if (options_.stage == 1) {
      bucket.work = comm_->all_reduce_async(bucket.grads, ReduceOp::kAvg, options_.timeout);
    } else {
      at::Tensor out = bucket.grad_shard;
      if (!bucket.shard_is_zero) {
        bucket.received = at::empty({bucket.shard.numel}, bucket.grad_shard.options());
        out = bucket.received;
      }
      bucket.work =
          comm_->reduce_scatter_async(out, bucket.grads, ReduceOp::kAvg, options_.timeout);
    }
    ++next_bucket_;
    if (in_backward_) {
      ++stats_.buckets_launched_during_backward;
      sample_memory();  // the transient peak: staging buffers and live .grad
    }
  }
}

// Finishes launched buckets, oldest first: every completed one, and more
// until at most `limit` are in flight.
void ZeroRedundancyOptimizer::throttle_in_flight(size_t limit) {
  while (oldest_in_flight_ < next_bucket_) {
    if (next_bucket_ - oldest_in_flight_ <= limit &&
        !buckets_[oldest_in_flight_].work->is_completed()) {
      break;
    }
    finish_launched(oldest_in_flight_++);
  }
}

void ZeroRedundancyOptimizer::finish_launched(size_t b) {
  Bucket& bucket = buckets_[b];
  TANDEM_ASSERT(bucket.work != nullptr, "bucket {} was never launched", b);
  bucket.work->wait(wait_timeout());
  if (options_.trace) {
    options_.trace->span(
        fmt::format("{} bucket {}", options_.stage == 1 ? "all_reduce" : "reduce_scatter", b),
        "comm", bucket.launched_at, bucket.work->finished_at());
  }
  bucket.work.reset();
  if (options_.stage == 2) {
    at::NoGradGuard no_grad;
    if (bucket.received.defined()) bucket.grad_shard.add_(bucket.received);
    bucket.received = at::Tensor();
    bucket.grads = at::Tensor();  // the staging buffer goes back to the allocator
    bucket.shard_is_zero = false;
  }
}

// Parameters this backward did not reach: they contribute their .grad (from
// no_sync passes) or zeros. Returns their names.
std::vector<std::string> ZeroRedundancyOptimizer::fill_unready() {
  std::vector<std::string> unused;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (ready_[i]) continue;
    unused.push_back(names_[i]);
    ready_[i] = true;
    stage_gradient(i, /*add=*/false);
    --buckets_[plan_.bucket_of[i]].pending;
  }
  return unused;
}

void ZeroRedundancyOptimizer::finish_backward(uint64_t iteration) {
  if (iteration != iteration_ || !callback_queued_) return;  // that backward already failed
  try {
    in_backward_ = false;
    const std::vector<std::string> unused = fill_unready();
    TANDEM_CHECK(unused.empty() || options_.find_unused_parameters,
                 "rank {}: ZeroRedundancyOptimizer: parameter{} {} got no gradient in this "
                 "backward; if some parameters are unused in some iterations, set "
                 "ZeroOptions::find_unused_parameters (they then contribute zeros), or freeze "
                 "them with requires_grad(false)",
                 comm_->rank(), unused.size() == 1 ? "" : "s", fmt::join(unused, ", "));
    TANDEM_CHECK(deferred_error_.empty(), "{}", deferred_error_);
    const auto hooks_end = std::chrono::steady_clock::now();
    launch_ready_buckets();
    const auto start = std::chrono::steady_clock::now();
    while (oldest_in_flight_ < next_bucket_) finish_launched(oldest_in_flight_++);
    TANDEM_ASSERT(next_bucket_ == buckets_.size(), "only {} of {} buckets were launched",
                  next_bucket_, buckets_.size());
    const auto waited = std::chrono::steady_clock::now();
    stats_.wait_seconds = std::chrono::duration<double>(waited - start).count();
    if (options_.trace) {
      options_.trace->span("backward (hooks)", "compute", first_hook_at_, hooks_end);
      options_.trace->span("wait for gradients", "compute", start, waited);
    }
    if (options_.broadcast_buffers) {
      detail::broadcast_from_rank0(*comm_, module_->buffers(/*recurse=*/true), options_.timeout);
    }
    sample_memory();
  } catch (...) {
    abandon_iteration();
    throw;
  }
  reset_iteration();
}

// ---- step, zero_grad, clipping ----

void ZeroRedundancyOptimizer::step() {
  const auto start = std::chrono::steady_clock::now();
  {
    at::NoGradGuard no_grad;
    optimizer_->step();
  }
  const auto stepped = std::chrono::steady_clock::now();
  // Each rank's input is its own slice of the output: every backend gathers
  // in place (see all_gather in communicator.h).
  std::vector<std::shared_ptr<Work>> works;
  std::vector<TraceRecorder::TimePoint> launched;
  for (auto& b : buckets_) {
    launched.push_back(std::chrono::steady_clock::now());
    works.push_back(comm_->all_gather_async(b.params, b.param_shard, options_.timeout));
  }
  for (size_t b = 0; b < works.size(); ++b) {
    works[b]->wait(wait_timeout());  // on a throw, each Work still ends by its deadline
    if (options_.trace) {
      options_.trace->span(fmt::format("all_gather bucket {}", b), "comm", launched[b],
                           works[b]->finished_at());
    }
  }
  const auto gathered = std::chrono::steady_clock::now();
  stats_.all_gather_seconds = std::chrono::duration<double>(gathered - stepped).count();
  if (options_.trace) {
    options_.trace->span("optimizer step (shard)", "compute", start, stepped);
    options_.trace->span("wait for all_gather", "compute", stepped, gathered);
  }
  sample_memory();
}

void ZeroRedundancyOptimizer::zero_grad() {
  at::NoGradGuard no_grad;
  for (auto& b : buckets_) {
    if (options_.stage == 1) {
      b.grads.zero_();
    } else {
      b.grad_shard.zero_();
      b.shard_is_zero = true;
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& grad = params_[i].mutable_grad();
    if (options_.stage == 1) {
      if (!same_memory(grad, grad_views_[i])) grad = grad_views_[i];
    } else {
      grad.reset();
    }
  }
}

double ZeroRedundancyOptimizer::clip_grad_norm(double max_norm) {
  TANDEM_CHECK(max_norm > 0 && std::isfinite(max_norm),
               "ZeroRedundancyOptimizer::clip_grad_norm: max_norm must be positive and finite "
               "(got {})",
               max_norm);
  at::NoGradGuard no_grad;
  // Stage 1 holds the whole averaged gradient on every rank; stage 2 only its shards.
  double sum_sq = 0;
  for (const auto& b : buckets_) {
    const at::Tensor& g = options_.stage == 1 ? b.grads : b.grad_shard;
    if (g.numel() == 0) continue;
    const double n = g.norm().item<double>();
    sum_sq += n * n;
  }
  if (options_.stage == 2) {
    at::Tensor total = at::full({1}, sum_sq, at::kDouble);
    comm_->all_reduce(total, ReduceOp::kSum, options_.timeout);
    sum_sq = total.item<double>();
  }
  const double norm = std::sqrt(sum_sq);
  const double coef = max_norm / (norm + 1e-6);  // as torch::nn::utils::clip_grad_norm_
  if (coef < 1) {
    for (auto& b : buckets_) (options_.stage == 1 ? b.grads : b.grad_shard).mul_(coef);
  }
  return norm;
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
  auto& state = optimizer_->state();
  auto it = state.find(c10::guts::to_string(pieces[piece].unsafeGetTensorImpl()));
  return it == state.end() ? nullptr : it->second.get();
}

void ZeroRedundancyOptimizer::sample_memory() {
  ModelStateBytes now;
  std::vector<at::Tensor> flats;
  std::vector<at::Tensor> grads = gradients_of(params_);
  for (const auto& b : buckets_) {
    flats.push_back(b.params);
    grads.insert(grads.end(), {b.grads, b.grad_shard, b.received});
  }
  StorageSet held;
  now.parameters = held.add(flats);
  held.add(params_);  // views of the flat buffers: excluded from activations, not counted again
  now.gradients = held.add(grads);
  try {
    now.optimizer_state = held.add(optimizer_state_tensors(*optimizer_));
  } catch (const NotSupported&) {
    now.optimizer_state = 0;  // a state type memory accounting does not know; see memory()
  }
  memory_.record(now, held);
}

ZeroRedundancyOptimizer::NoSyncGuard::NoSyncGuard(ZeroRedundancyOptimizer& zero)
    : zero_(zero), previous_(zero.sync_enabled_) {
  zero_.sync_enabled_ = false;
}

ZeroRedundancyOptimizer::NoSyncGuard::~NoSyncGuard() { zero_.sync_enabled_ = previous_; }

}  // namespace tandem::parallel
