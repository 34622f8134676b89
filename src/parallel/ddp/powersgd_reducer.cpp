#include "parallel/ddp/powersgd_reducer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include <chrono>

#include "tandem/core/check.h"
#include "tandem/core/error.h"

namespace tandem::parallel::detail {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

struct PowerSgdReducer::Bucket {
  PowerSgdBucketPlan plan;
  std::vector<size_t> params;     // parameter index per slot
  std::vector<at::Tensor> error;  // per slot; defined once a compressed step ran
  at::Tensor uncompressed;        // flat; the bucket buffer itself when nothing is compressed
  at::Tensor p, q;                // flat, every compressed gradient's P (Q) in slot order
  bool q_ready = false;           // q holds last iteration's Q (warm start)
  std::shared_ptr<Work> u_work, p_work, q_work;
  TraceRecorder::TimePoint u_at, p_at, q_at;

  at::Tensor matrix(const at::Tensor& buffer, const PowerSgdTensorPlan& t) const {
    return buffer.narrow(0, t.offset, t.numel).view({t.rows, t.cols});
  }
  at::Tensor p_of(const PowerSgdTensorPlan& t) const {
    return p.narrow(0, t.p_offset, t.rows * t.rank).view({t.rows, t.rank});
  }
  at::Tensor q_of(const PowerSgdTensorPlan& t) const {
    return q.narrow(0, t.q_offset, t.cols * t.rank).view({t.cols, t.rank});
  }
};

PowerSgdReducer::PowerSgdReducer(const PowerSgdOptions& options, const BucketPlan& plan,
                                 const std::vector<at::Tensor>& params,
                                 std::shared_ptr<Communicator> comm, std::optional<Millis> timeout,
                                 std::shared_ptr<TraceRecorder> trace)
    : options_(options), comm_(std::move(comm)), timeout_(timeout), trace_(std::move(trace)) {
  validate_powersgd_options(options_);
  where_.resize(params.size());
  for (const auto& p : params) shapes_.emplace_back(p.sizes().begin(), p.sizes().end());
  for (size_t b = 0; b < plan.buckets.size(); ++b) {
    const auto& pb = plan.buckets[b];
    std::vector<std::vector<int64_t>> shapes;
    for (size_t slot = 0; slot < pb.params.size(); ++slot) {
      shapes.push_back(shapes_[pb.params[slot]]);
      where_[pb.params[slot]] = {b, slot};
    }
    Bucket bucket;
    bucket.plan = make_powersgd_bucket_plan(shapes, pb.offsets, options_);
    bucket.params = pb.params;
    bucket.error.resize(pb.params.size());
    if (bucket.plan.p_numel > 0) {
      if (pb.dtype != at::kFloat && pb.dtype != at::kDouble) {
        throw NotSupported(fmt::format(
            "DistributedDataParallel: PowerSGD compresses float32 and float64 gradients, but "
            "bucket {} holds {} parameters; convert the model or use GradCompression::kFp16",
            b, c10::toString(pb.dtype)));
      }
      const auto opts = at::TensorOptions().dtype(pb.dtype);
      bucket.p = at::zeros({bucket.plan.p_numel}, opts);
      bucket.q = at::zeros({bucket.plan.q_numel}, opts);
      bucket.uncompressed = at::zeros({bucket.plan.uncompressed_numel}, opts);
    }
    buckets_.push_back(std::move(bucket));
  }
}

PowerSgdReducer::~PowerSgdReducer() {
  for (auto& bucket : buckets_) {
    for (auto* w : {&bucket.u_work, &bucket.p_work, &bucket.q_work}) {
      if (!*w) continue;
      try {
        (*w)->wait(comm_->timeout());  // it writes tensors that die with this object
      } catch (const std::exception&) {
        // already reported to the backward that launched it
      }
    }
  }
}

// Same values on every rank without communication: each matrix's generator is
// seeded from the option's seed, the parameter index and the draw number.
void PowerSgdReducer::initialise_q(Bucket& bucket) {
  const uint64_t draw = draws_++;
  for (size_t slot = 0; slot < bucket.plan.tensors.size(); ++slot) {
    const auto& t = bucket.plan.tensors[slot];
    if (!t.compressed) continue;
    const uint64_t seed =
        splitmix64(options_.random_seed ^ splitmix64(bucket.params[slot] ^ splitmix64(draw)));
    at::Generator gen = at::detail::createCPUGenerator(seed);
    bucket.q_of(t).copy_(at::randn({t.cols, t.rank}, gen, at::TensorOptions().dtype(at::kDouble)));
  }
}

int64_t PowerSgdReducer::launch_p(size_t b, const at::Tensor& buffer) {
  Bucket& bucket = buckets_[b];
  const auto timeout = timeout_;
  if (bucket.plan.p_numel == 0) {
    // Nothing compresses in this bucket: a plain all-reduce of the buffer.
    bucket.uncompressed = buffer;
  } else {
    int64_t at = 0;
    for (const auto& t : bucket.plan.tensors) {
      if (t.compressed) continue;
      bucket.uncompressed.narrow(0, at, t.numel).copy_(buffer.narrow(0, t.offset, t.numel));
      at += t.numel;
    }
  }
  // The uncompressed part goes first so that it travels while P is computed.
  int64_t bytes = 0;
  if (bucket.uncompressed.numel() > 0) {
    if (trace_) bucket.u_at = std::chrono::steady_clock::now();
    bucket.u_work = comm_->all_reduce_async(bucket.uncompressed, ReduceOp::kAvg, timeout);
    bytes += bucket.uncompressed.nbytes();
  }
  if (bucket.plan.p_numel == 0) return bytes;

  if (!options_.warm_start || !bucket.q_ready) initialise_q(bucket);
  bucket.q_ready = true;
  for (size_t slot = 0; slot < bucket.plan.tensors.size(); ++slot) {
    const auto& t = bucket.plan.tensors[slot];
    if (!t.compressed) continue;
    at::Tensor m = bucket.matrix(buffer, t);
    if (options_.use_error_feedback && bucket.error[slot].defined()) m.add_(bucket.error[slot]);
    at::Tensor q = bucket.q_of(t);
    orthogonalize_columns(q, options_.orthogonalization_epsilon);
    at::Tensor p = bucket.p_of(t);
    at::mm_out(p, m, q);
  }
  // Summed, not averaged: P is orthogonalised next, which undoes any scale.
  if (trace_) bucket.p_at = std::chrono::steady_clock::now();
  bucket.p_work = comm_->all_reduce_async(bucket.p, ReduceOp::kSum, timeout);
  return bytes + bucket.p.nbytes();
}

void PowerSgdReducer::wait(const std::shared_ptr<Work>& work, const char* what, size_t b) {
  TANDEM_ASSERT(work != nullptr, "PowerSGD: the {} all-reduce of bucket {} was never launched",
                what, b);
  work->wait(timeout_.value_or(comm_->timeout()));
}

int64_t PowerSgdReducer::launch_q(size_t b, const at::Tensor& buffer) {
  Bucket& bucket = buckets_[b];
  if (bucket.plan.p_numel == 0) return 0;
  wait(bucket.p_work, "P", b);
  if (trace_) {
    trace_->span(fmt::format("powersgd P bucket {}", b), "comm", bucket.p_at,
                 bucket.p_work->finished_at());
  }
  bucket.p_work.reset();
  for (const auto& t : bucket.plan.tensors) {
    if (!t.compressed) continue;
    at::Tensor p = bucket.p_of(t);
    orthogonalize_columns(p, options_.orthogonalization_epsilon);
    at::Tensor q = bucket.q_of(t);
    at::mm_out(q, bucket.matrix(buffer, t).t(), p);
  }
  if (trace_) bucket.q_at = std::chrono::steady_clock::now();
  bucket.q_work = comm_->all_reduce_async(bucket.q, ReduceOp::kSum, timeout_);
  return bucket.q.nbytes();
}

void PowerSgdReducer::finish(size_t b, const at::Tensor& buffer) {
  Bucket& bucket = buckets_[b];
  if (bucket.plan.p_numel > 0) {
    wait(bucket.q_work, "Q", b);
    if (trace_) {
      trace_->span(fmt::format("powersgd Q bucket {}", b), "comm", bucket.q_at,
                   bucket.q_work->finished_at());
    }
    bucket.q_work.reset();
    // P P^T (sum of M) / world = P P^T (average of M), P orthonormal.
    bucket.q.div_(comm_->size());
    for (size_t slot = 0; slot < bucket.plan.tensors.size(); ++slot) {
      const auto& t = bucket.plan.tensors[slot];
      if (!t.compressed) continue;
      at::Tensor m = bucket.matrix(buffer, t);
      at::Tensor& error = bucket.error[slot];
      if (options_.use_error_feedback) {
        if (!error.defined()) error = at::empty({t.rows, t.cols}, m.options());
        error.copy_(m);
      }
      at::mm_out(m, bucket.p_of(t), bucket.q_of(t).t());
      if (options_.use_error_feedback) error.sub_(m);
    }
  }
  if (bucket.uncompressed.numel() > 0) {
    wait(bucket.u_work, "uncompressed", b);
    if (trace_) {
      trace_->span(fmt::format("all_reduce bucket {} (uncompressed part)", b), "comm", bucket.u_at,
                   bucket.u_work->finished_at());
    }
    bucket.u_work.reset();
    if (bucket.plan.p_numel > 0) {
      int64_t at = 0;
      for (const auto& t : bucket.plan.tensors) {
        if (t.compressed) continue;
        buffer.narrow(0, t.offset, t.numel).copy_(bucket.uncompressed.narrow(0, at, t.numel));
        at += t.numel;
      }
    }
  }
}

void PowerSgdReducer::abandon() {
  for (auto& bucket : buckets_) {
    bucket.u_work.reset();
    bucket.p_work.reset();
    bucket.q_work.reset();
  }
}

at::Tensor PowerSgdReducer::error(size_t param) const {
  TANDEM_CHECK(param < where_.size(), "PowerSGD: parameter index {} is out of range (there are {})",
               param, where_.size());
  const auto [b, slot] = where_[param];
  const at::Tensor& e = buckets_[b].error[slot];
  return e.defined() ? e.view(shapes_[param]) : at::Tensor();
}

}  // namespace tandem::parallel::detail
