// What Tandem knows of LibTorch's optimizers and their per-parameter state:
// which optimizers it knows (OptimizerKind), the tensors of a parameter's
// state by LibTorch's field names, and rebuilding a state from them. This is
// the one home of that knowledge: the strategies' memory accounting (the
// optimizer-state storages they report to memory/) and sharded checkpoints
// (train/sharded_checkpoint.h) both use it.
//
// LibTorch keys an optimizer's state by each parameter's TensorImpl
// address; the functions here take the parameter tensor and key it the
// same way. Plain functions over an optimizer (no shared state, not
// thread-safe on one optimizer); nothing here is collective.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace torch::optim {
class Optimizer;
class OptimizerParamState;
}  // namespace torch::optim

namespace tandem::parallel {

// The LibTorch optimizers whose state Tandem knows. All are elementwise:
// each element's update reads only that element's parameter, gradient and
// state, which is what lets ZeRO step flat shards that cross parameters.
enum class OptimizerKind { kSgd, kAdam, kAdamW, kAdagrad, kRmsprop };

// LibTorch's class name: "SGD", "Adam", "AdamW", "Adagrad", "RMSprop".
const char* to_string(OptimizerKind kind);
// "SGD, Adam, AdamW, Adagrad, RMSprop", for messages.
const char* known_optimizers();

// The kind of `optimizer`, or nullopt for an optimizer Tandem does not know
// (LBFGS, one of your own).
std::optional<OptimizerKind> known_kind(const torch::optim::Optimizer& optimizer);
// The same, throwing NotSupported naming its C++ type and the known ones.
OptimizerKind optimizer_kind(const torch::optim::Optimizer& optimizer);
// Its C++ type, demangled ("torch::optim::LBFGS"), for messages.
std::string type_name(const torch::optim::Optimizer& optimizer);

// One parameter's state: its tensors by LibTorch's field names (SGD:
// momentum_buffer; Adam, AdamW: exp_avg, exp_avg_sq, max_exp_avg_sq;
// Adagrad: sum; RMSprop: square_avg, momentum_buffer, grad_avg), in that
// order, undefined ones left out, each shaped like the parameter; and the
// step count, for the types that keep one (all but SGD).
struct ParamStateFields {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::optional<int64_t> step;
};

// The state `optimizer` keeps for `param` (one of its parameters), or null
// before the optimizer created it (most create it in their first step).
const torch::optim::OptimizerParamState* find_param_state(
    const torch::optim::Optimizer& optimizer, const at::Tensor& param);
torch::optim::OptimizerParamState* find_param_state(torch::optim::Optimizer& optimizer,
                                                    const at::Tensor& param);

// The fields of `state` (live tensors, not copies). Throws NotSupported for
// a state type it does not know, naming it and the known ones.
ParamStateFields param_state_fields(const torch::optim::OptimizerParamState& state);

// The reverse: a state for an optimizer of `kind` holding `fields` (the
// tensors are used as they are: pass copies shaped like the parameter).
// Throws InvalidArgument naming the first field the kind needs that is
// missing (the step count is "step").
std::unique_ptr<torch::optim::OptimizerParamState> make_param_state(OptimizerKind kind,
                                                                    const ParamStateFields& fields);

// Installs `state` as `param`'s state in `optimizer`; a null `state` erases
// it (the optimizer starts that parameter afresh at its next step).
void set_param_state(torch::optim::Optimizer& optimizer, const at::Tensor& param,
                     std::unique_ptr<torch::optim::OptimizerParamState> state);

// Every tensor of every parameter's state in `optimizer`, for the memory
// accounting. Throws NotSupported for a state type it does not know.
std::vector<at::Tensor> optimizer_state_tensors(const torch::optim::Optimizer& optimizer);

}  // namespace tandem::parallel
