// The dataset interface of the train layer: a random-access collection of
// (input, target) examples, read from a real file format or generated
// deterministically. Every implementation is immutable after construction, so
// its const methods are thread-safe; nothing here is collective: each rank
// holds its own copy and a DistributedSampler chooses which indices it reads.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <span>
#include <string>

namespace tandem::train {

// One sample, or a stack of samples along a new leading dimension.
// Images are float32 in [0, 1] shaped [C, H, W] with an int64 scalar label;
// token windows are int64 [T] inputs with int64 [T] next-token targets.
struct Example {
  at::Tensor input;
  at::Tensor target;
};

class Dataset {
 public:
  virtual ~Dataset() = default;

  // Number of samples; get() accepts indices in [0, size()).
  virtual int64_t size() const = 0;

  // Sample `index`. Throws tandem::InvalidArgument if it is out of range.
  virtual Example get(int64_t index) const = 0;

  // Stacks get(i) for each index: inputs [B, ...], targets [B, ...]. Throws
  // tandem::InvalidArgument for an empty list or an out-of-range index.
  virtual Example batch(std::span<const int64_t> indices) const;

  // A short description for logs and errors, e.g. "mnist '/data/mnist' (train)".
  virtual std::string describe() const = 0;
};

namespace detail {
// Throws InvalidArgument naming `dataset` unless 0 <= index < size.
void check_index(const Dataset& dataset, int64_t index);
}  // namespace detail

}  // namespace tandem::train
