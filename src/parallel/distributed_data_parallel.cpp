#include "tandem/parallel/distributed_data_parallel.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/module.h>

#include <chrono>
#include <functional>

#include "powersgd_reducer.h"
#include "tandem/core/check.h"

namespace tandem::parallel {

// Runs after a parameter's AccumulateGrad: its .grad now holds this
// iteration's (or the accumulated) gradient.
class DistributedDataParallel::Hook final : public torch::autograd::FunctionPostHook {
 public:
  Hook(DistributedDataParallel* ddp, size_t param) : ddp_(ddp), param_(param) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    ddp_->mark_ready(param_);
    return outputs;
  }

 private:
  DistributedDataParallel* ddp_;
  size_t param_;
};

namespace {

constexpr int kMaxDims = 6;
constexpr int kRow = 3 + kMaxDims;  // name hash, dtype, ndim, sizes

std::string shape_of(const int64_t* row) {
  std::vector<int64_t> dims(row + 3, row + 3 + std::min<int64_t>(row[2], kMaxDims));
  return fmt::format("[{}] {}", fmt::join(dims, ", "),
                     c10::toString(static_cast<at::ScalarType>(row[1])));
}

}  // namespace

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
  for (const auto& item : module_->named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;  // frozen: never reduced
    TANDEM_CHECK(item.value().device().is_cpu(),
                 "DistributedDataParallel: parameter '{}' is on {}; this build reduces CPU "
                 "tensors",
                 item.key(), item.value().device().str());
    names_.push_back(item.key());
    params_.push_back(item.value());
  }
  check_replicas_match();
  broadcast_state();
  std::vector<int64_t> numels;
  std::vector<at::ScalarType> dtypes;
  for (const auto& p : params_) {
    numels.push_back(p.numel());
    dtypes.push_back(p.scalar_type());
  }
  plan_ = make_bucket_plan(numels, dtypes,
                           static_cast<int64_t>(options_.bucket_cap_mb * 1024.0 * 1024.0));
  for (const auto& b : plan_.buckets) {
    buffers_.push_back(at::zeros({b.numel}, at::TensorOptions().dtype(b.dtype)));
  }
  wire_.resize(plan_.buckets.size());
  if (options_.compression == GradCompression::kPowerSgd) {
    powersgd_ = std::make_unique<detail::PowerSgdReducer>(options_.powersgd, plan_, params_, comm_,
                                                          options_.timeout, options_.trace);
  }
  launched_at_.resize(plan_.buckets.size());
  works_.resize(plan_.buckets.size());
  reset_iteration();
  for (size_t i = 0; i < params_.size(); ++i) {
    // Holding the accumulator keeps it (and the hook) alive across iterations.
    std::shared_ptr<torch::autograd::Node> acc =
        torch::autograd::impl::grad_accumulator(params_[i]);
    uintptr_t key = acc->add_post_hook(std::make_unique<Hook>(this, i));
    hooks_.emplace_back(acc, key);
  }
}

DistributedDataParallel::~DistributedDataParallel() {
  for (auto& [acc, key] : hooks_)
    std::static_pointer_cast<torch::autograd::Node>(acc)->del_post_hook(key);
  for (auto& w : works_) {
    if (!w) continue;
    try {
      w->wait(comm_->timeout());  // the tensors it writes die with this object
    } catch (const std::exception&) {
      // already reported to the backward that launched it
    }
  }
}

// Every rank learns every rank's (name, dtype, shape) per parameter and
// compares them with rank 0's, so all ranks throw the same message.
void DistributedDataParallel::check_replicas_match() {
  const int world = comm_->size();
  at::Tensor count = at::empty({1}, at::kLong);
  count[0] = static_cast<int64_t>(params_.size());
  at::Tensor counts = at::empty({world}, at::kLong);
  comm_->all_gather(counts, count);
  for (int r = 1; r < world; ++r) {
    TANDEM_CHECK(counts[r].item<int64_t>() == counts[0].item<int64_t>(),
                 "DistributedDataParallel: rank {} has {} trainable parameters but rank 0 has "
                 "{}; all ranks must build the same model",
                 r, counts[r].item<int64_t>(), counts[0].item<int64_t>());
  }
  const int64_t n = static_cast<int64_t>(params_.size());
  at::Tensor mine = at::full({n * kRow}, -1, at::kLong);
  int64_t* m = mine.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const auto& p = params_[i];
    m[i * kRow] = static_cast<int64_t>(std::hash<std::string>{}(names_[i]) >> 1);
    m[i * kRow + 1] = static_cast<int64_t>(p.scalar_type());
    m[i * kRow + 2] = p.dim();
    for (int64_t d = 0; d < std::min<int64_t>(p.dim(), kMaxDims); ++d)
      m[i * kRow + 3 + d] = p.size(d);
  }
  at::Tensor all = at::empty({n * kRow * world}, at::kLong);
  comm_->all_gather(all, mine);
  const int64_t* a = all.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* ref = a + i * kRow;
    for (int r = 1; r < world; ++r) {
      const int64_t* row = a + (r * n + i) * kRow;
      if (std::equal(ref, ref + kRow, row)) continue;
      std::string who =
          r == comm_->rank() ? fmt::format("'{}'", names_[i]) : fmt::format("number {}", i);
      if (row[0] != ref[0]) {
        TANDEM_CHECK(false,
                     "DistributedDataParallel: parameter {} is named differently on rank {} than "
                     "on rank 0; all ranks must build the same model",
                     who, r);
      }
      TANDEM_CHECK(false,
                   "DistributedDataParallel: parameter {} is {} on rank {} but {} on rank 0; all "
                   "ranks must build the same model",
                   who, shape_of(row), r, shape_of(ref));
    }
  }
}

void DistributedDataParallel::broadcast_state() {
  at::NoGradGuard no_grad;
  for (auto& p : params_) comm_->broadcast(p.data(), 0, options_.timeout);
  broadcast_buffers();
}

void DistributedDataParallel::broadcast_buffers() {
  for (auto& b : module_->buffers(/*recurse=*/true)) {
    if (b.defined() && b.numel() > 0) comm_->broadcast(b, 0, options_.timeout);
  }
}

void DistributedDataParallel::reset_iteration() {
  pending_.assign(plan_.buckets.size(), 0);
  for (size_t b = 0; b < plan_.buckets.size(); ++b) {
    pending_[b] = static_cast<int64_t>(plan_.buckets[b].params.size());
  }
  ready_.assign(params_.size(), false);
  next_bucket_ = 0;
  callback_queued_ = false;
  in_backward_ = false;
}

void DistributedDataParallel::mark_ready(size_t param) {
  if (!sync_enabled_) return;
  if (!callback_queued_) {
    callback_queued_ = true;
    in_backward_ = true;
    stats_ = Stats{};
    for (const auto& buffer : buffers_) stats_.uncompressed_bytes += buffer.nbytes();
    powersgd_now_ = powersgd_ && powersgd_->active();
    stats_.powersgd = powersgd_now_;
    first_hook_at_ = std::chrono::steady_clock::now();
    torch::autograd::Engine::get_default_engine().queue_callback([this] { finish_backward(); });
  }
  if (ready_[param]) return;  // accumulated twice in one backward: one copy suffices
  ready_[param] = true;
  const size_t b = plan_.bucket_of[param];
  const int64_t off = plan_.buckets[b].offsets[plan_.slot_of[param]];
  const at::Tensor& grad = params_[param].grad();
  buffers_[b].narrow(0, off, params_[param].numel()).copy_(grad.reshape(-1));
  if (--pending_[b] == 0) launch_ready_buckets();
}

// Buckets launch in index order only, whatever order they fill in, so every
// rank issues the same sequence of all-reduces.
void DistributedDataParallel::launch_ready_buckets() {
  while (next_bucket_ < plan_.buckets.size() && pending_[next_bucket_] == 0) {
    const size_t b = next_bucket_++;
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
    if (in_backward_) ++stats_.buckets_launched_during_backward;
  }
}

void DistributedDataParallel::finish_backward() {
  try {
    in_backward_ = false;
    std::vector<std::string> unused;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (ready_[i]) continue;
      unused.push_back(names_[i]);
      const size_t b = plan_.bucket_of[i];
      buffers_[b].narrow(0, plan_.buckets[b].offsets[plan_.slot_of[i]], params_[i].numel()).zero_();
      ready_[i] = true;
      --pending_[b];
    }
    TANDEM_CHECK(unused.empty() || options_.find_unused_parameters,
                 "rank {}: DistributedDataParallel: parameter{} {} got no gradient in this "
                 "backward; if some parameters are unused in some iterations, set "
                 "DdpOptions::find_unused_parameters (they then contribute zeros), or freeze "
                 "them with requires_grad(false)",
                 comm_->rank(), unused.size() == 1 ? "" : "s", fmt::join(unused, ", "));
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
      if (params_[i].grad().defined()) {
        params_[i].mutable_grad().copy_(avg);
      } else {
        params_[i].mutable_grad() = avg.clone();
      }
    }
    if (options_.broadcast_buffers) broadcast_buffers();
    if (powersgd_) powersgd_->end_iteration();
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

DistributedDataParallel::NoSyncGuard::NoSyncGuard(DistributedDataParallel& ddp)
    : ddp_(ddp), previous_(ddp.sync_enabled_) {
  ddp_.sync_enabled_ = false;
}

DistributedDataParallel::NoSyncGuard::~NoSyncGuard() { ddp_.sync_enabled_ = previous_; }

}  // namespace tandem::parallel
