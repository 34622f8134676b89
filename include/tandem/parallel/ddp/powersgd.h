// PowerSGD gradient compression (Vogels, Karimireddy, Jaggi, NeurIPS 2019),
// as PyTorch's ddp_comm_hooks.powerSGD_hook does it: each matrix-shaped
// gradient M (n x m; a conv weight is viewed as [out, in*kh*kw]) is replaced
// by a rank-r approximation P Q^T of the ranks' average, found by one step of
// power iteration with two small all-reduces (P: n x r, Q: m x r) instead of
// one of n x m. What compression drops is kept per rank (error feedback) and
// added to the next iteration's gradient, so nothing is lost, only delayed.
//
// This header holds the options and the pure pieces (which tensors are
// compressed, Gram-Schmidt); DistributedDataParallel runs them
// (GradCompression::kPowerSgd). No communicator here; all functions are pure
// and thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace tandem::parallel {

struct PowerSgdOptions {
  // r, the rank of the approximation (PyTorch's matrix_approximation_rank,
  // default 1). A matrix sends (n + m) * r elements instead of n * m; r is
  // capped at min(n, m) per matrix. Higher r: closer to exact, more bytes.
  int64_t matrix_approximation_rank = 1;
  // Synchronised backwards that use plain (exact) all-reduce before PowerSGD
  // starts, counted from construction. PyTorch's default is 1000; ours is 100
  // because Tandem runs are often a few hundred steps, and 1000 would mean
  // PowerSGD never runs in them. The early, fast-changing gradients are the
  // ones compression hurts most; PyTorch's advice is about 10% of the run.
  // 0 compresses from the first backward.
  int64_t start_powersgd_iter = 100;
  // A matrix is compressed only if (n + m) * r * min_compression_rate < n * m
  // (default 2, as PyTorch); the others, with every 1-D or scalar gradient
  // (biases, norms), go uncompressed in one flat all-reduce per bucket. Values
  // below 1 compress even matrices for which that sends more bytes (tests use
  // it for exactness). >= 0.
  double min_compression_rate = 2.0;
  // Add last iteration's compression error (M - P Q^T, per rank) to this
  // iteration's gradient before compressing. Without it PowerSGD is biased and
  // usually trains worse; it costs one gradient-sized buffer per compressed
  // matrix.
  bool use_error_feedback = true;
  // Start each iteration's power step from the previous iteration's Q (one
  // power-iteration step per training step then refines the same subspace).
  // Off: a fresh random Q every iteration.
  bool warm_start = true;
  // Added to each column norm in Gram-Schmidt. PyTorch's default is 0, which
  // is also ours; a column whose norm is exactly 0 (a zero gradient) is left
  // at 0 instead of becoming NaN. >= 0.
  double orthogonalization_epsilon = 0.0;
  // Seed of the random initial Q; the same on every rank by construction (it
  // is derived from this seed and the parameter index, never from a global
  // RNG), so the ranks need not exchange Q.
  uint64_t random_seed = 0;
};

// Throws InvalidArgument naming the first bad field (e.g.
// "PowerSgdOptions::matrix_approximation_rank must be at least 1 (got 0)").
void validate_powersgd_options(const PowerSgdOptions& options);

// How one gradient of a bucket is reduced under PowerSGD.
struct PowerSgdTensorPlan {
  int64_t offset = 0;  // element offset in the bucket's flat buffer
  int64_t numel = 0;
  bool compressed = false;
  // When compressed: the matrix view and its effective rank, and where its P
  // (rows x rank) and Q (cols x rank) lie in the bucket's flat P and Q.
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t rank = 0;
  int64_t p_offset = 0;
  int64_t q_offset = 0;
};

struct PowerSgdBucketPlan {
  std::vector<PowerSgdTensorPlan> tensors;  // in bucket slot order
  int64_t uncompressed_numel = 0;
  int64_t p_numel = 0;
  int64_t q_numel = 0;
};

// Decides, for the gradients of one bucket (their shapes, in slot order, and
// their offsets in the flat buffer), which are compressed and how. A tensor
// with at least 2 dimensions and elements is viewed as [size(0), numel /
// size(0)] and compressed if it passes the min_compression_rate test with
// rank min(n, m, r); everything else is uncompressed. Pure; throws
// InvalidArgument if the lists differ in length or the options are bad.
PowerSgdBucketPlan make_powersgd_bucket_plan(const std::vector<std::vector<int64_t>>& shapes,
                                             const std::vector<int64_t>& offsets,
                                             const PowerSgdOptions& options);

// Gram-Schmidt on the columns of `matrix` (2-D, floating point), in place, as
// PyTorch's _orthogonalize_gram_schmidt: column i is divided by (its norm +
// epsilon), then removed from the columns after it. A column of norm exactly
// 0 with epsilon 0 stays 0. Works on strided views.
void orthogonalize_columns(const at::Tensor& matrix, double epsilon);

}  // namespace tandem::parallel
