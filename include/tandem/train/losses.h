// The classification loss every model of the zoo trains with, and the
// evaluation sums the loop reduces over the data ranks: cross-entropy over
// the last dimension of the logits (the classes, or the vocabulary for
// gpt-mini). Local; thread-safe (pure functions of their tensors).
#pragma once

#include <ATen/core/Tensor.h>

namespace tandem::train {

// Evaluation sums over batches; the loss is the summed cross-entropy.
struct EvalSums {
  double loss = 0;
  double correct = 0;  // predictions equal to the target
  double count = 0;    // predictions
  EvalSums& operator+=(const EvalSums& o) {
    loss += o.loss;
    correct += o.correct;
    count += o.count;
    return *this;
  }
};

// Mean cross-entropy of logits [..., classes] against int64 targets [...].
at::Tensor loss_of(const at::Tensor& logits, const at::Tensor& target);
// Sums of cross-entropy, correct predictions and predictions of `logits`
// [..., classes] (the whole vocabulary) against int64 `target` [...].
EvalSums eval_sums(const at::Tensor& logits, const at::Tensor& target);

}  // namespace tandem::train
