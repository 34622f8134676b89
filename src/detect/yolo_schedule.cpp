#include "tandem/detect/yolo_schedule.h"

#include <torch/nn/module.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "tandem/core/check.h"

namespace tandem::detect {
namespace {

// Python's round() and NumPy's .round(): halves go to the even neighbour
// (std::nearbyint in the default rounding mode).
int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

// np.interp(x, [0, x1], [y0, y1]) for x in [0, x1].
double interp(double x, double x1, double y0, double y1) {
  if (x1 <= 0) return y1;
  const double t = std::clamp(x / x1, 0.0, 1.0);
  return y0 + t * (y1 - y0);
}

}  // namespace

// Note [Yolo schedule]
// Ultralytics' BaseTrainer (v8): accumulate = max(round(nbs / batch), 1)
// with the global batch, weight_decay *= batch * accumulate / nbs, and an
// optimizer step once `accumulate` iterations have passed since the last
// one. Warmup lasts max(round(warmup_epochs * nb), 100) iterations and
// interpolates linearly, per iteration, from the warmup values to the
// epoch's values. The epoch factor is the LambdaLR of
//   linear: (1 - epoch / epochs) * (1 - lrf) + lrf
//   cosine: ((1 - cos(epoch * pi / epochs)) / 2) * (lrf - 1) + 1.
YoloSchedule::YoloSchedule(const TrainArgs& args, int64_t batches_per_epoch)
    : args_(args) {
  TANDEM_CHECK(batches_per_epoch >= 1, "YoloSchedule: batches_per_epoch must be >= 1, got {}",
               batches_per_epoch);
  warmup_ =
      args.warmup_epochs > 0
          ? std::max<int64_t>(
                round_half_even(args.warmup_epochs * static_cast<double>(batches_per_epoch)), 100)
          : -1;
  accumulate_ = std::max<int64_t>(
      round_half_even(static_cast<double>(args.nbs) / static_cast<double>(args.batch)), 1);
  weight_decay_ = args.weight_decay * static_cast<double>(args.batch * accumulate_) /
                  static_cast<double>(args.nbs);
}

std::unique_ptr<torch::optim::SGD> YoloSchedule::make_optimizer(torch::nn::Module& model) const {
  std::vector<at::Tensor> biases, weights, norm_weights;
  for (const auto& p : model.named_parameters()) {
    const std::string& name = p.key();
    if (name.ends_with(".bias")) {
      biases.push_back(p.value());
    } else if (name.ends_with(".bn.weight")) {
      norm_weights.push_back(p.value());
    } else {
      weights.push_back(p.value());
    }
  }
  auto options = [&](double decay) {
    return std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(args_.lr0)
                                                          .momentum(args_.momentum)
                                                          .nesterov(true)
                                                          .weight_decay(decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(biases, options(0.0));
  groups.emplace_back(weights, options(weight_decay_));
  groups.emplace_back(norm_weights, options(0.0));
  return std::make_unique<torch::optim::SGD>(
      std::move(groups),
      torch::optim::SGDOptions(args_.lr0).momentum(args_.momentum).nesterov(true));
}

double YoloSchedule::lr_factor(int64_t epoch) const {
  const double x = static_cast<double>(epoch), n = static_cast<double>(args_.epochs);
  if (args_.cos_lr) {
    return ((1 - std::cos(x * std::numbers::pi / n)) / 2) * (args_.lrf - 1) + 1;
  }
  return std::max(1 - x / n, 0.0) * (1 - args_.lrf) + args_.lrf;
}

int64_t YoloSchedule::accumulate(int64_t ni) const {
  if (ni > warmup_) return accumulate_;
  const double a = interp(static_cast<double>(ni), static_cast<double>(warmup_), 1.0,
                          static_cast<double>(args_.nbs) / static_cast<double>(args_.batch));
  return std::max<int64_t>(1, round_half_even(a));
}

void YoloSchedule::apply(torch::optim::SGD& optimizer, int64_t ni, int64_t epoch) const {
  const double lr = args_.lr0 * lr_factor(epoch);
  auto& groups = optimizer.param_groups();
  for (size_t j = 0; j < groups.size(); ++j) {
    auto& o = static_cast<torch::optim::SGDOptions&>(groups[j].options());
    if (ni <= warmup_) {
      const double x = static_cast<double>(ni), x1 = static_cast<double>(warmup_);
      o.lr(interp(x, x1, j == 0 ? args_.warmup_bias_lr : 0.0, lr));
      o.momentum(interp(x, x1, args_.warmup_momentum, args_.momentum));
    } else {
      o.lr(lr);
      o.momentum(args_.momentum);
    }
  }
}

}  // namespace tandem::detect
