#include "tandem/detect/model_ema.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include <cmath>

#include "tandem/core/check.h"

namespace tandem::detect {
namespace {

// Every floating tensor of `m` (parameters then buffers) by name.
torch::OrderedDict<std::string, at::Tensor> float_state(const torch::nn::Module& m) {
  torch::OrderedDict<std::string, at::Tensor> out;
  for (const auto& p : m.named_parameters()) out.insert(p.key(), p.value());
  for (const auto& b : m.named_buffers()) {
    if (at::isFloatingType(b.value().scalar_type())) out.insert(b.key(), b.value());
  }
  return out;
}

}  // namespace

ModelEma::ModelEma(std::shared_ptr<torch::nn::Module> ema, double decay, double tau,
                   int64_t updates)
    : ema_(std::move(ema)), decay_(decay), tau_(tau), updates_(updates) {
  TANDEM_CHECK(ema_ != nullptr, "ModelEma: no module");
  TANDEM_CHECK(decay >= 0 && decay < 1 && tau > 0,
               "ModelEma: decay must be in [0, 1) and tau positive, got {} and {}", decay, tau);
  ema_->eval();
}

double ModelEma::next_decay() const {
  return decay_ * (1 - std::exp(-static_cast<double>(updates_ + 1) / tau_));
}

void ModelEma::copy_from(const torch::nn::Module& model) {
  at::NoGradGuard no_grad;
  auto src = float_state(model);
  for (const auto& e : float_state(*ema_)) {
    const at::Tensor* s = src.find(e.key());
    TANDEM_CHECK(s != nullptr, "ModelEma: the model has no tensor '{}'", e.key());
    e.value().copy_(*s);
  }
}

void ModelEma::update(const torch::nn::Module& model) {
  at::NoGradGuard no_grad;
  const double d = next_decay();
  ++updates_;
  auto src = float_state(model);
  for (const auto& e : float_state(*ema_)) {
    const at::Tensor* s = src.find(e.key());
    TANDEM_CHECK(s != nullptr, "ModelEma: the model has no tensor '{}'", e.key());
    e.value().mul_(d).add_(s->detach(), 1 - d);
  }
}

}  // namespace tandem::detect
