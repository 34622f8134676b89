// What Tandem knows of LibTorch's optimizer state: the kinds, the fields of
// each kind's state, rebuilding a state from them (the next step is then
// bitwise the same), and clear errors for what it does not know.
#include "tandem/parallel/optimizer_state.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>
#include <torch/optim/lbfgs.h>
#include <torch/optim/sgd.h>

#include "tandem/core/error.h"
#include "tandem/memory/storage_set.h"
#include "tests/parallel/support/equivalence.h"

namespace tandem::parallel {
namespace {

using testing::Opt;

TEST(OptimizerState, StateTensorsOfSgdAndAdamW) {
  at::Tensor w = at::zeros({1000}).set_requires_grad(true);
  w.mutable_grad() = at::ones_like(w);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.1).momentum(0.9));
  EXPECT_EQ(memory::storage_bytes(optimizer_state_tensors(sgd)), 0);  // lazily created
  sgd.step();
  EXPECT_EQ(memory::storage_bytes(optimizer_state_tensors(sgd)), 4000);
  torch::optim::AdamW adamw({w}, torch::optim::AdamWOptions(0.1));
  adamw.step();
  EXPECT_EQ(memory::storage_bytes(optimizer_state_tensors(adamw)), 8000);
}

struct Expected {
  Opt opt;
  OptimizerKind kind;
  std::vector<std::string> fields;  // with the options testing::make_optimizer sets
  bool step;
};

void PrintTo(const Expected& e, std::ostream* os) { *os << to_string(e.kind); }

class OptimizerStateOf : public ::testing::TestWithParam<Expected> {};

// Three steps, then the state moves through its fields into a second
// optimizer over a copy of the parameter: both take the same fourth step.
TEST_P(OptimizerStateOf, FieldsRebuildAStateThatStepsTheSame) {
  const Expected e = GetParam();
  at::manual_seed(5);
  at::Tensor w = at::randn({10}, at::kDouble).set_requires_grad(true);
  at::Tensor v = w.detach().clone().set_requires_grad(true);
  auto a = testing::make_optimizer(e.opt, {w});
  auto b = testing::make_optimizer(e.opt, {v});
  EXPECT_EQ(optimizer_kind(*a), e.kind);
  EXPECT_EQ(known_kind(*a), e.kind);
  for (int s = 0; s < 3; ++s) {
    w.mutable_grad() = at::arange(10, at::kDouble) * (s + 1) - 4;
    a->step();
  }
  {
    at::NoGradGuard no_grad;
    v.copy_(w);
  }
  const auto* state = find_param_state(*a, w);
  ASSERT_NE(state, nullptr);
  const ParamStateFields fields = param_state_fields(*state);
  std::vector<std::string> names;
  for (const auto& [name, t] : fields.tensors) {
    names.push_back(name);
    EXPECT_EQ(t.sizes(), w.sizes()) << name;
  }
  EXPECT_EQ(names, e.fields);
  EXPECT_EQ(fields.step.has_value(), e.step);
  if (e.step) {
    EXPECT_EQ(*fields.step, 3);
  }
  ParamStateFields copies;
  for (const auto& [name, t] : fields.tensors) copies.tensors.emplace_back(name, t.clone());
  copies.step = fields.step;
  set_param_state(*b, v, make_param_state(e.kind, copies));
  at::Tensor g = at::randn({10}, at::kDouble);
  w.mutable_grad() = g;
  v.mutable_grad() = g.clone();
  a->step();
  b->step();
  EXPECT_TRUE(at::equal(w, v)) << to_string(e.kind);
  set_param_state(*b, v, nullptr);
  EXPECT_EQ(find_param_state(*b, v), nullptr);
}

INSTANTIATE_TEST_SUITE_P(
    EveryKnownOptimizer, OptimizerStateOf,
    ::testing::Values(
        Expected{Opt::kSgdNesterov, OptimizerKind::kSgd, {"momentum_buffer"}, false},
        Expected{Opt::kAdam, OptimizerKind::kAdam, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
                 true},
        Expected{Opt::kAdamW, OptimizerKind::kAdamW, {"exp_avg", "exp_avg_sq"}, true},
        Expected{Opt::kAdagrad, OptimizerKind::kAdagrad, {"sum"}, true},
        Expected{Opt::kRmsprop, OptimizerKind::kRmsprop,
                 {"square_avg", "momentum_buffer", "grad_avg"}, true}),
    [](const ::testing::TestParamInfo<Expected>& info) { return testing::opt_name(info.param.opt); });

TEST(OptimizerState, AMissingFieldIsNamedWithTheKindThatNeedsIt) {
  at::Tensor t = at::zeros({4}, at::kDouble);
  try {
    make_param_state(OptimizerKind::kAdamW, ParamStateFields{{{"momentum_buffer", t}}, {}});
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("field 'step' is missing; AdamW needs it"),
              std::string::npos)
        << e.what();
  }
  try {
    make_param_state(OptimizerKind::kAdagrad, ParamStateFields{{}, 1});
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("field 'sum' is missing; Adagrad needs it"),
              std::string::npos)
        << e.what();
  }
}

TEST(OptimizerState, AnOptimizerItDoesNotKnowIsNamed) {
  at::Tensor w = at::zeros({4}, at::kDouble).set_requires_grad(true);
  torch::optim::LBFGS lbfgs({w}, torch::optim::LBFGSOptions(0.1));
  EXPECT_EQ(known_kind(lbfgs), std::nullopt);
  EXPECT_EQ(type_name(lbfgs), "torch::optim::LBFGS");
  try {
    optimizer_kind(lbfgs);
    FAIL() << "no error";
  } catch (const NotSupported& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("torch::optim::LBFGS"), std::string::npos) << msg;
    EXPECT_NE(msg.find(known_optimizers()), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace tandem::parallel
