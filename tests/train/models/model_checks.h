// Checks shared by the model tests: parameter counts, gradient flow and
// equality of two models' parameters.
#pragma once

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <string>

#include "tandem/core/error.h"

namespace tandem::train::testing {

inline int64_t parameter_count(const torch::nn::Module& model) {
  int64_t count = 0;
  for (const auto& p : model.parameters()) count += p.numel();
  return count;
}

// Runs backward of `output.sum()` (or `loss`) and expects a defined, finite,
// not-all-zero gradient on every parameter.
inline void expect_gradients_everywhere(const torch::nn::Module& model, const at::Tensor& loss) {
  loss.backward();
  for (const auto& item : model.named_parameters()) {
    const at::Tensor& grad = item.value().grad();
    ASSERT_TRUE(grad.defined()) << "no gradient for " << item.key();
    EXPECT_TRUE(grad.isfinite().all().item<bool>()) << "non-finite gradient for " << item.key();
    EXPECT_GT(grad.abs().sum().item<double>(), 0.0) << "zero gradient for " << item.key();
  }
}

inline void expect_equal_parameters(const torch::nn::Module& a, const torch::nn::Module& b) {
  auto pa = a.named_parameters();
  auto pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) {
    ASSERT_TRUE(pb.contains(item.key())) << item.key();
    EXPECT_TRUE(item.value().equal(pb[item.key()])) << "parameter differs: " << item.key();
  }
}

// Expects `fn` to throw tandem::InvalidArgument whose message contains `words`.
template <typename Fn>
void expect_invalid_argument(Fn&& fn, const std::string& words) {
  try {
    fn();
    ADD_FAILURE() << "expected tandem::InvalidArgument containing '" << words << "'";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos)
        << "message '" << e.what() << "' lacks '" << words << "'";
  }
}

}  // namespace tandem::train::testing
