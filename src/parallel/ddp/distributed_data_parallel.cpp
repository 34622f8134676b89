#include "tandem/parallel/ddp/distributed_data_parallel.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>

#include <chrono>
#include <functional>

#include "parallel/ddp/powersgd_reducer.h"
#include "parallel/detail/bucket_scheduler.h"
#include "parallel/detail/grad_hooks.h"
#include "parallel/detail/replicas.h"
#include "tandem/core/check.h"
#include "tandem/memory/storage_set.h"
#include "tandem/parallel/flat_layout.h"
#include "tandem/parallel/optimizer_state.h"

namespace tandem::parallel {

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<torch::nn::Module> module,
                                                 std::shared_ptr<Communicator> comm,
                                                 DdpOptions options)
    : module_(std::move(module)), comm_(std::move(comm)), options_(options) {
  TANDEM_CHECK(module_ != nullptr, "DistributedDataParallel: the module is null");
  TANDEM_CHECK(comm_ != nullptr, "DistributedDataParallel: the communicator is null");
  TANDEM_CHECK(options_.bucket_cap_mb > 0, "DdpOptions::bucket_cap_mb must be positive (got {})",
               options_.bucket_cap_mb);
  if (options_.compression == GradCompression::kPowerSgd) {
    validate_powersgd_options(options_.powersgd);  // before any collective
  }
  // Frozen parameters are never reduced.
  auto [names, params] =
      detail::trainable_parameters(*module_, "DistributedDataParallel", "reduces");
  names_ = std::move(names);
  params_ = std::move(params);
  detail::check_replicas_match(*comm_, names_, params_, "DistributedDataParallel");
  broadcast_state();
  plan_ = make_bucket_plan(params_, static_cast<int64_t>(options_.bucket_cap_mb * 1024.0 * 1024.0));
  for (const auto& b : plan_.buckets) {
    buffers_.push_back(at::zeros({b.numel}, at::TensorOptions().dtype(b.dtype)));
  }
  if (options_.gradient_as_bucket_view) {
    for (size_t i = 0; i < params_.size(); ++i) params_[i].mutable_grad() = grad_alias(i);
  }
  wire_.resize(plan_.buckets.size());
  if (options_.compression == GradCompression::kPowerSgd) {
    powersgd_ = std::make_unique<detail::PowerSgdReducer>(options_.powersgd, plan_, params_, comm_,
                                                          options_.timeout, options_.trace);
  }
  launched_at_.resize(plan_.buckets.size());
  works_.resize(plan_.buckets.size());
  scheduler_ = std::make_unique<detail::BucketScheduler>(plan_);
  hooks_ = std::make_unique<detail::GradReadyHooks>(params_, [this](size_t i) { mark_ready(i); });
}

DistributedDataParallel::~DistributedDataParallel() {
  hooks_.reset();
  for (auto& w : works_) {
    if (!w) continue;
    try {
      w->wait(comm_->timeout());  // the tensors it writes die with this object
    } catch (const std::exception&) {
      // already reported to the backward that launched it
    }
  }
}

void DistributedDataParallel::broadcast_state() {
  at::NoGradGuard no_grad;
  detail::broadcast_from_rank0(*comm_, params_, options_.timeout);
  if (options_.broadcast_buffers) broadcast_buffers();
}

void DistributedDataParallel::broadcast_buffers() {
  detail::broadcast_buffers_from_rank0(*comm_, *module_, options_.timeout,
                                       "DistributedDataParallel");
}

void DistributedDataParallel::reset_iteration() { scheduler_->reset(); }

void DistributedDataParallel::mark_ready(size_t param) {
  if (!sync_enabled_) return;
  if (scheduler_->begin_backward()) begin_backward();
  // Accumulated twice in one backward: one copy suffices.
  if (!scheduler_->mark_ready(param)) return;
  const size_t b = plan_.bucket_of[param];
  const int64_t off = plan_.buckets[b].offsets[plan_.slot_of[param]];
  const at::Tensor& grad = params_[param].grad();
  at::Tensor slot = buffers_[b].narrow(0, off, params_[param].numel());
  // An aliased .grad was accumulated in place: nothing to copy.
  if (!(options_.gradient_as_bucket_view && grad.defined() && grad.data_ptr() == slot.data_ptr())) {
    slot.copy_(grad.reshape(-1));
  }
  launch_ready_buckets();
}

// The first gradient of a synchronised backward.
void DistributedDataParallel::begin_backward() {
  stats_ = Stats{};
  for (const auto& buffer : buffers_) stats_.uncompressed_bytes += buffer.nbytes();
  powersgd_now_ = powersgd_ && powersgd_->active();
  stats_.powersgd = powersgd_now_;
  first_hook_at_ = std::chrono::steady_clock::now();
  detail::at_end_of_backward([this] { finish_backward(); });
  memory_.at(memory::MemoryPoint::kBackwardBegins);
}

// In bucket order only: see Note [Bucket order] in bucket_scheduler.cpp.
void DistributedDataParallel::launch_ready_buckets() {
  while (std::optional<size_t> b = scheduler_->next_launch()) launch_bucket(*b);
}

void DistributedDataParallel::launch_bucket(size_t b) {
  // Stamped before the launch: a small all-reduce can finish before
  // all_reduce_async returns.
  if (options_.trace) launched_at_[b] = std::chrono::steady_clock::now();
  if (powersgd_now_) {
    stats_.all_reduce_bytes += powersgd_->launch_p(b, buffers_[b]);
  } else if (options_.compression == GradCompression::kNone ||
             options_.compression == GradCompression::kPowerSgd) {
    works_[b] = comm_->all_reduce_async(buffers_[b], ReduceOp::kAvg, options_.timeout);
    stats_.all_reduce_bytes += buffers_[b].nbytes();
  } else {
    // Divide before the sum, as PyTorch's fp16 hook does, so the sum cannot overflow.
    at::ScalarType wire =
        options_.compression == GradCompression::kFp16 ? at::kHalf : at::kBFloat16;
    wire_[b] = (buffers_[b] / comm_->size()).to(wire);
    works_[b] = comm_->all_reduce_async(wire_[b], ReduceOp::kSum, options_.timeout);
    stats_.all_reduce_bytes += wire_[b].nbytes();
  }
  if (scheduler_->in_backward()) ++stats_.buckets_launched_during_backward;
}

// Parameters this backward did not reach contribute zeros, if allowed.
void DistributedDataParallel::fill_unused() {
  std::vector<std::string> unused;
  for (size_t i : scheduler_->take_unready()) {
    unused.push_back(names_[i]);
    const size_t b = plan_.bucket_of[i];
    buffers_[b].narrow(0, plan_.buckets[b].offsets[plan_.slot_of[i]], params_[i].numel()).zero_();
  }
  detail::check_no_unused_parameters(comm_->rank(), "DistributedDataParallel", "DdpOptions", unused,
                                     options_.find_unused_parameters);
}

void DistributedDataParallel::finish_backward() {
  try {
    scheduler_->end_of_hooks();
    fill_unused();
    const auto hooks_end = std::chrono::steady_clock::now();
    launch_ready_buckets();
    auto start = std::chrono::steady_clock::now();
    if (powersgd_now_) {
      finish_powersgd();
    } else {
      wait_buckets();
    }
    const auto waited = std::chrono::steady_clock::now();
    stats_.wait_seconds = std::chrono::duration<double>(waited - start).count();
    if (options_.trace) {
      options_.trace->span("backward (hooks)", "compute", first_hook_at_, hooks_end);
      options_.trace->span("wait for all-reduce", "compute", start, waited);
    }
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
      const size_t b = plan_.bucket_of[i];
      at::Tensor avg =
          buffers_[b]
              .narrow(0, plan_.buckets[b].offsets[plan_.slot_of[i]], params_[i].numel())
              .view(params_[i].sizes());
      if (options_.gradient_as_bucket_view) {
        const at::Tensor& g = params_[i].grad();
        if (!g.defined() || g.data_ptr() != avg.data_ptr())
          params_[i].mutable_grad() = grad_alias(i);
      } else if (params_[i].grad().defined()) {
        params_[i].mutable_grad().copy_(avg);
      } else {
        params_[i].mutable_grad() = avg.clone();
      }
    }
    if (options_.broadcast_buffers) broadcast_buffers();
    if (powersgd_) powersgd_->end_iteration();
    memory_.at(memory::MemoryPoint::kBackwardEnds);
  } catch (...) {
    for (auto& w : works_) w.reset();
    if (powersgd_) powersgd_->abandon();
    reset_iteration();
    throw;
  }
  reset_iteration();
}

void DistributedDataParallel::wait_buckets() {
  for (size_t b = 0; b < works_.size(); ++b) {
    TANDEM_ASSERT(works_[b] != nullptr, "bucket {} was never launched", b);
    works_[b]->wait(options_.timeout.value_or(comm_->timeout()));
    if (options_.trace) {
      options_.trace->span(fmt::format("all_reduce bucket {}", b), "comm", launched_at_[b],
                           works_[b]->finished_at());
    }
    works_[b].reset();
    if (wire_[b].defined()) buffers_[b].copy_(wire_[b]);
  }
}

// Note [PowerSGD schedule]
// A bucket's PowerSGD chain is uncompressed + P all-reduce -> orthogonalise P,
// Q = M^T P -> Q all-reduce -> P Q^T. The P step launches when the bucket is
// ready during backward, in bucket order, like a plain bucket, so it overlaps
// the rest of backward. The Q step needs P's result, and the communicator
// wants one issuing thread and the same collective order on every rank: a Q
// launched "as soon as P is done" would depend on timing and could interleave
// differently with later P launches on different ranks. So the Q steps run
// in the final callback, in bucket order: wait P(b), launch Q(b), next bucket,
// so Q(b) travels while P(b+1) is orthogonalised; then every Q is waited for
// and decompressed. P and Q are small (n r and m r elements), so what the
// callback waits for is mostly latency, two short collectives per bucket.
void DistributedDataParallel::finish_powersgd() {
  for (size_t b = 0; b < buffers_.size(); ++b) {
    stats_.all_reduce_bytes += powersgd_->launch_q(b, buffers_[b]);
  }
  for (size_t b = 0; b < buffers_.size(); ++b) powersgd_->finish(b, buffers_[b]);
}

at::Tensor DistributedDataParallel::powersgd_error(size_t param) const {
  TANDEM_CHECK(powersgd_ != nullptr,
               "DistributedDataParallel::powersgd_error: compression is not kPowerSgd");
  return powersgd_->error(param);
}

at::Tensor DistributedDataParallel::grad_alias(size_t i) const {
  const size_t b = plan_.bucket_of[i];
  return flat_alias(buffers_[b], plan_.buckets[b].offsets[plan_.slot_of[i]], params_[i].sizes());
}

void DistributedDataParallel::sample_memory(const torch::optim::Optimizer* optimizer) {
  if (optimizer) optimizer_bytes_ = memory::storage_bytes(optimizer_state_tensors(*optimizer));
  memory_.at(memory::MemoryPoint::kRequested);
}

// Gradients: .grad and the bucket buffers (one storage when .grad aliases them).
void DistributedDataParallel::collect_memory(memory::ModelStateTensors& held) const {
  held.parameters = params_;
  held.gradients = memory::gradients_of(params_);
  held.gradients.insert(held.gradients.end(), buffers_.begin(), buffers_.end());
  held.optimizer_state_bytes = optimizer_bytes_;
}

DistributedDataParallel::NoSyncGuard::NoSyncGuard(DistributedDataParallel& ddp)
    : ddp_(ddp), previous_(ddp.sync_enabled_) {
  ddp_.sync_enabled_ = false;
}

DistributedDataParallel::NoSyncGuard::~NoSyncGuard() { ddp_.sync_enabled_ = previous_; }

}  // namespace tandem::parallel
