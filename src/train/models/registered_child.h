// Private to train/models/: a zoo model's submodule by its registered name.
// The zoo models keep their members private; the names they register are
// the interface that code splitting them (pipeline layers, tensor-parallel
// slices) relies on.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <string>

#include "tandem/core/check.h"

namespace tandem::train {

// The child `name` of `parent` as holder type H (sharing the module).
// `user` names the caller in the error when there is no such child of H's type.
template <typename H>
H registered_child(torch::nn::Module& parent, const std::string& name, const char* user) {
  auto m = std::dynamic_pointer_cast<typename H::ContainedType>(parent.named_children()[name]);
  TANDEM_CHECK(m != nullptr, "{}: the model has no '{}' of the expected type", user, name);
  return H(m);
}

}  // namespace tandem::train
