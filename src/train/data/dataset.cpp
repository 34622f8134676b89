#include "tandem/train/data/dataset.h"

#include <ATen/ops/stack.h>

#include <vector>

#include "tandem/core/check.h"

namespace tandem::train {

namespace detail {

void check_index(const Dataset& dataset, int64_t index) {
  TANDEM_CHECK(index >= 0 && index < dataset.size(), "{}: index {} is out of range [0, {})",
               dataset.describe(), index, dataset.size());
}

}  // namespace detail

Example Dataset::batch(std::span<const int64_t> indices) const {
  TANDEM_CHECK(!indices.empty(), "{}: batch() needs at least one index", describe());
  std::vector<at::Tensor> inputs;
  std::vector<at::Tensor> targets;
  inputs.reserve(indices.size());
  targets.reserve(indices.size());
  for (int64_t index : indices) {
    Example e = get(index);
    inputs.push_back(std::move(e.input));
    targets.push_back(std::move(e.target));
  }
  return {at::stack(inputs), at::stack(targets)};
}

}  // namespace tandem::train
