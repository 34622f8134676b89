#include "tandem/parallel/optimizer_state.h"

#include <c10/util/Type.h>
#include <c10/util/string_utils.h>
#include <fmt/format.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <typeinfo>

#include "tandem/core/error.h"

namespace tandem::parallel {
namespace {

namespace optim = torch::optim;
using Fields = std::vector<std::pair<std::string, at::Tensor>>;

std::string key_of(const at::Tensor& param) {
  return c10::guts::to_string(param.unsafeGetTensorImpl());
}

void add_if(Fields& out, const char* name, const at::Tensor& t) {
  if (t.defined()) out.emplace_back(name, t);
}

template <class State>
ParamStateFields adam_fields(const State& s) {
  ParamStateFields f;
  add_if(f.tensors, "exp_avg", s.exp_avg());
  add_if(f.tensors, "exp_avg_sq", s.exp_avg_sq());
  add_if(f.tensors, "max_exp_avg_sq", s.max_exp_avg_sq());
  f.step = s.step();
  return f;
}

// Thrown without a source location: callers add their own context (a
// checkpoint names its file).
[[noreturn]] void missing(const char* name, OptimizerKind kind) {
  throw InvalidArgument(
      fmt::format("optimizer state field '{}' is missing; {} needs it", name, to_string(kind)));
}

// The tensor of `name` in `fields`: required ones must be there.
at::Tensor field(const ParamStateFields& fields, OptimizerKind kind, const char* name,
                 bool required) {
  for (const auto& [n, t] : fields.tensors) {
    if (n == name) return t;
  }
  if (required) missing(name, kind);
  return at::Tensor();
}

int64_t step_of(const ParamStateFields& fields, OptimizerKind kind) {
  if (!fields.step) missing("step", kind);
  return *fields.step;
}

template <class State>
std::unique_ptr<optim::OptimizerParamState> make_adam_state(const ParamStateFields& f,
                                                            OptimizerKind kind) {
  auto s = std::make_unique<State>();
  s->step(step_of(f, kind));
  s->exp_avg(field(f, kind, "exp_avg", true));
  s->exp_avg_sq(field(f, kind, "exp_avg_sq", true));
  at::Tensor max_sq = field(f, kind, "max_exp_avg_sq", false);
  if (max_sq.defined()) s->max_exp_avg_sq(max_sq);
  return s;
}

}  // namespace

const char* to_string(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd: return "SGD";
    case OptimizerKind::kAdam: return "Adam";
    case OptimizerKind::kAdamW: return "AdamW";
    case OptimizerKind::kAdagrad: return "Adagrad";
    case OptimizerKind::kRmsprop: return "RMSprop";
  }
  return "?";
}

const char* known_optimizers() { return "SGD, Adam, AdamW, Adagrad, RMSprop"; }

std::optional<OptimizerKind> known_kind(const optim::Optimizer& optimizer) {
  const optim::Optimizer* o = &optimizer;
  if (dynamic_cast<const optim::SGD*>(o) != nullptr) return OptimizerKind::kSgd;
  if (dynamic_cast<const optim::Adam*>(o) != nullptr) return OptimizerKind::kAdam;
  if (dynamic_cast<const optim::AdamW*>(o) != nullptr) return OptimizerKind::kAdamW;
  if (dynamic_cast<const optim::Adagrad*>(o) != nullptr) return OptimizerKind::kAdagrad;
  if (dynamic_cast<const optim::RMSprop*>(o) != nullptr) return OptimizerKind::kRmsprop;
  return std::nullopt;
}

std::string type_name(const optim::Optimizer& optimizer) {
  return c10::demangle(typeid(optimizer).name());
}

OptimizerKind optimizer_kind(const optim::Optimizer& optimizer) {
  if (auto kind = known_kind(optimizer)) return *kind;
  throw NotSupported(fmt::format("optimizer {} is not one Tandem knows; known: {}",
                                 type_name(optimizer), known_optimizers()));
}

const optim::OptimizerParamState* find_param_state(const optim::Optimizer& optimizer,
                                                   const at::Tensor& param) {
  auto it = optimizer.state().find(key_of(param));
  return it == optimizer.state().end() ? nullptr : it->second.get();
}

optim::OptimizerParamState* find_param_state(optim::Optimizer& optimizer,
                                             const at::Tensor& param) {
  auto it = optimizer.state().find(key_of(param));
  return it == optimizer.state().end() ? nullptr : it->second.get();
}

ParamStateFields param_state_fields(const optim::OptimizerParamState& state) {
  const optim::OptimizerParamState* s = &state;
  if (auto* sgd = dynamic_cast<const optim::SGDParamState*>(s)) {
    ParamStateFields f;
    add_if(f.tensors, "momentum_buffer", sgd->momentum_buffer());
    return f;
  }
  if (auto* adam = dynamic_cast<const optim::AdamParamState*>(s)) return adam_fields(*adam);
  if (auto* adamw = dynamic_cast<const optim::AdamWParamState*>(s)) return adam_fields(*adamw);
  if (auto* adagrad = dynamic_cast<const optim::AdagradParamState*>(s)) {
    ParamStateFields f;
    add_if(f.tensors, "sum", adagrad->sum());
    f.step = adagrad->step();
    return f;
  }
  if (auto* rms = dynamic_cast<const optim::RMSpropParamState*>(s)) {
    ParamStateFields f;
    add_if(f.tensors, "square_avg", rms->square_avg());
    add_if(f.tensors, "momentum_buffer", rms->momentum_buffer());
    add_if(f.tensors, "grad_avg", rms->grad_avg());
    f.step = rms->step();
    return f;
  }
  throw NotSupported(fmt::format("optimizer state type {} is not one Tandem knows; known: {}",
                                 c10::demangle(typeid(*s).name()), known_optimizers()));
}

std::unique_ptr<optim::OptimizerParamState> make_param_state(OptimizerKind kind,
                                                             const ParamStateFields& f) {
  switch (kind) {
    case OptimizerKind::kSgd: {
      auto s = std::make_unique<optim::SGDParamState>();
      s->momentum_buffer(field(f, kind, "momentum_buffer", true));
      return s;
    }
    case OptimizerKind::kAdam: return make_adam_state<optim::AdamParamState>(f, kind);
    case OptimizerKind::kAdamW: return make_adam_state<optim::AdamWParamState>(f, kind);
    case OptimizerKind::kAdagrad: {
      auto s = std::make_unique<optim::AdagradParamState>();
      s->step(step_of(f, kind));
      s->sum(field(f, kind, "sum", true));
      return s;
    }
    case OptimizerKind::kRmsprop: {
      auto s = std::make_unique<optim::RMSpropParamState>();
      s->step(step_of(f, kind));
      s->square_avg(field(f, kind, "square_avg", true));
      s->momentum_buffer(field(f, kind, "momentum_buffer", false));
      s->grad_avg(field(f, kind, "grad_avg", false));
      return s;
    }
  }
  throw InternalError(fmt::format("make_param_state: OptimizerKind {}", static_cast<int>(kind)));
}

void set_param_state(optim::Optimizer& optimizer, const at::Tensor& param,
                     std::unique_ptr<optim::OptimizerParamState> state) {
  if (state == nullptr) {
    optimizer.state().erase(key_of(param));
  } else {
    optimizer.state()[key_of(param)] = std::move(state);
  }
}

std::vector<at::Tensor> optimizer_state_tensors(const optim::Optimizer& optimizer) {
  std::vector<at::Tensor> out;
  for (const auto& [key, state] : optimizer.state()) {
    for (auto& [name, t] : param_state_fields(*state).tensors) out.push_back(std::move(t));
  }
  return out;
}

}  // namespace tandem::parallel
