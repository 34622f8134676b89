// ModelEma: an exponential moving average of a model's weights, as
// Ultralytics' ModelEMA keeps one: after every optimizer step each floating
// parameter and buffer (BatchNorm's running statistics included) becomes
//   ema = d * ema + (1 - d) * model,  d = decay * (1 - exp(-updates / tau)),
// so that early updates follow the model closely. Validation and the saved
// weights use the average. Not thread-safe; not collective (the models of
// data-parallel ranks are equal, so are their averages).
#pragma once

#include <cstdint>
#include <memory>

namespace torch::nn {
class Module;
}

namespace tandem::detect {

class ModelEma {
 public:
  // `ema` is a module with the same parameter and buffer names and shapes
  // as the models it will average (e.g. a second instance of the same
  // architecture); it is put in eval mode. Throws tandem::InvalidArgument
  // for decay outside [0, 1) or tau <= 0.
  explicit ModelEma(std::shared_ptr<torch::nn::Module> ema, double decay = 0.9999,
                    double tau = 2000, int64_t updates = 0);

  // Copies `model`'s parameters and buffers into the average (no decay).
  // Throws tandem::InvalidArgument naming a tensor `model` lacks.
  void copy_from(const torch::nn::Module& model);

  // One update after an optimizer step (see above).
  void update(const torch::nn::Module& model);

  // The decay the next update would use.
  double next_decay() const;

  const std::shared_ptr<torch::nn::Module>& module() const { return ema_; }
  int64_t updates() const { return updates_; }
  void set_updates(int64_t updates) { updates_ = updates; }

 private:
  std::shared_ptr<torch::nn::Module> ema_;
  double decay_, tau_;
  int64_t updates_;
};

}  // namespace tandem::detect
