#include "tandem/parallel/sync_batch_norm.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/zeros.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/custom_function.h>

#include "tandem/core/check.h"

namespace tandem::parallel {
namespace {

// Shape [1, C, 1, ...] for broadcasting per-channel values against x.
std::vector<int64_t> channel_shape(const at::Tensor& x) {
  std::vector<int64_t> s(x.dim(), 1);
  s[1] = x.size(1);
  return s;
}

std::vector<int64_t> reduce_dims(const at::Tensor& x) {
  std::vector<int64_t> d = {0};
  for (int64_t i = 2; i < x.dim(); ++i) d.push_back(i);
  return d;
}

// The communicator travels through autograd's saved data as an address; the
// module that owns it outlives every graph it builds.
Communicator* comm_of(torch::autograd::AutogradContext* ctx) {
  return reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
}

struct SyncBnFunction : public torch::autograd::Function<SyncBnFunction> {
  // Returns y; writes the batch mean and unbiased variance into `stats` (2C)
  // for the running statistics.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias, int64_t comm,
                            double eps, at::Tensor stats) {
    auto* c = reinterpret_cast<Communicator*>(comm);
    const int64_t channels = x.size(1);
    auto dims = reduce_dims(x);
    const double local_count = static_cast<double>(x.numel() / std::max<int64_t>(channels, 1));
    // One all-reduce: per-channel sum, sum of squares, and the element count.
    at::Tensor packed =
        at::cat({x.sum(dims), (x * x).sum(dims), at::ones({1}, x.options()) * local_count});
    c->all_reduce(packed);
    const double count = packed[2 * channels].item<double>();
    TANDEM_CHECK(count > 1,
                 "SyncBatchNorm: needs more than one value per channel over all ranks "
                 "(got {})",
                 count);
    at::Tensor mean = packed.narrow(0, 0, channels) / count;
    at::Tensor var = packed.narrow(0, channels, channels) / count - mean * mean;
    at::Tensor invstd = at::rsqrt(var + eps);
    auto shape = channel_shape(x);
    at::Tensor xhat = (x - mean.view(shape)) * invstd.view(shape);
    stats.narrow(0, 0, channels).copy_(mean);
    stats.narrow(0, channels, channels).copy_(var * (count / (count - 1)));
    ctx->save_for_backward({xhat, invstd, weight});
    ctx->saved_data["comm"] = comm;
    ctx->saved_data["count"] = count;
    return xhat * weight.view(shape) + bias.view(shape);
  }

  // d(xhat) needs the global sums of dy and dy * xhat; the parameter
  // gradients stay local (DistributedDataParallel averages them).
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& xhat = saved[0];
    const at::Tensor& invstd = saved[1];
    const at::Tensor& weight = saved[2];
    const at::Tensor& dy = grads[0];
    const double count = ctx->saved_data["count"].toDouble();
    auto dims = reduce_dims(xhat);
    auto shape = channel_shape(xhat);
    const int64_t channels = xhat.size(1);
    at::Tensor sum_dy = dy.sum(dims);
    at::Tensor sum_dy_xhat = (dy * xhat).sum(dims);
    at::Tensor global = at::cat({sum_dy, sum_dy_xhat});
    comm_of(ctx)->all_reduce(global);
    at::Tensor mean_dy = global.narrow(0, 0, channels) / count;
    at::Tensor mean_dy_xhat = global.narrow(0, channels, channels) / count;
    at::Tensor dx = (dy - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape)) *
                    (invstd * weight).view(shape);
    return {dx, sum_dy_xhat, sum_dy, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

SyncBatchNormImpl::SyncBatchNormImpl(SyncBatchNormOptions options,
                                     std::shared_ptr<Communicator> comm)
    : options_(options), comm_(std::move(comm)) {
  TANDEM_CHECK(options_.num_features >= 1, "SyncBatchNorm: num_features must be >= 1 (got {})",
               options_.num_features);
  TANDEM_CHECK(comm_ != nullptr, "SyncBatchNorm: the communicator is null");
  reset();
}

void SyncBatchNormImpl::reset() {
  const int64_t c = options_.num_features;
  weight = register_parameter("weight", at::ones({c}));
  bias = register_parameter("bias", at::zeros({c}));
  running_mean = register_buffer("running_mean", at::zeros({c}));
  running_var = register_buffer("running_var", at::ones({c}));
  num_batches_tracked = register_buffer("num_batches_tracked", at::zeros({}, at::kLong));
}

at::Tensor SyncBatchNormImpl::forward(const at::Tensor& x) {
  TANDEM_CHECK(x.dim() >= 2 && x.size(1) == options_.num_features,
               "SyncBatchNorm: input of shape [{}] does not have {} channels in dimension 1",
               fmt::join(x.sizes(), ", "), options_.num_features);
  auto shape = channel_shape(x);
  if (!is_training()) {
    return (x - running_mean.view(shape)) * at::rsqrt(running_var.view(shape) + options_.eps) *
               weight.view(shape) +
           bias.view(shape);
  }
  at::Tensor stats = at::empty({2 * options_.num_features}, x.options());
  at::Tensor y = SyncBnFunction::apply(x, weight, bias, reinterpret_cast<int64_t>(comm_.get()),
                                       options_.eps, stats);
  {
    at::NoGradGuard no_grad;
    const double m = options_.momentum;
    const int64_t c = options_.num_features;
    running_mean.mul_(1 - m).add_(stats.narrow(0, 0, c).to(running_mean.dtype()), m);
    running_var.mul_(1 - m).add_(stats.narrow(0, c, c).to(running_var.dtype()), m);
    num_batches_tracked.add_(1);
  }
  return y;
}

}  // namespace tandem::parallel
