// YoloSchedule: Ultralytics' optimizer recipe for detection training, as
// pure functions of the iteration so that every rank (and a resumed run)
// computes the same values. See Note [Yolo schedule] in yolo_schedule.cpp.
//   - SGD with Nesterov momentum over three parameter groups: 0 biases (no
//     decay), 1 conv/linear weights (decay), 2 norm-layer weights (no decay);
//   - weight decay scaled by batch * accumulate / nbs;
//   - gradients accumulated to the nominal batch nbs;
//   - warmup over max(warmup_epochs epochs, 100 iterations): the bias rate
//     falls from warmup_bias_lr, the others rise from 0, momentum rises from
//     warmup_momentum, and accumulation ramps from 1;
//   - then lr0 * lf(epoch), lf linear or cosine from 1 down to lrf.
// Thread-safe: const after construction. Nothing is collective.
#pragma once

#include <cstdint>
#include <memory>

#include "tandem/detect/train_args.h"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class SGD;
}

namespace tandem::detect {

class YoloSchedule {
 public:
  // `batches_per_epoch`: global batches per epoch (>= 1).
  YoloSchedule(const TrainArgs& args, int64_t batches_per_epoch);

  // The SGD optimizer over `model`'s parameters in the three groups above,
  // with the scaled weight decay. Parameters named "*.bias" are biases;
  // "*.bn.weight" (the norm layers of ConvBnAct) are norm weights.
  std::unique_ptr<torch::optim::SGD> make_optimizer(torch::nn::Module& model) const;

  // Sets each group's learning rate and momentum for global iteration `ni`
  // (0-based, counted over epochs) in `epoch`.
  void apply(torch::optim::SGD& optimizer, int64_t ni, int64_t epoch) const;

  // Iterations whose gradients are summed before an optimizer step, at `ni`.
  int64_t accumulate(int64_t ni) const;

  // The epoch factor lf(epoch) of the learning rate.
  double lr_factor(int64_t epoch) const;

  int64_t warmup_iterations() const { return warmup_; }
  double weight_decay() const { return weight_decay_; }

 private:
  TrainArgs args_;
  int64_t warmup_;       // iterations; -1 without warmup
  int64_t accumulate_;   // after warmup
  double weight_decay_;  // scaled
};

}  // namespace tandem::detect
