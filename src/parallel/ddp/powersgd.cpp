#include "tandem/parallel/ddp/powersgd.h"

#include <ATen/TensorOperators.h>

#include <algorithm>
#include <cmath>

#include "tandem/core/check.h"

namespace tandem::parallel {

void validate_powersgd_options(const PowerSgdOptions& o) {
  TANDEM_CHECK(o.matrix_approximation_rank >= 1,
               "PowerSgdOptions::matrix_approximation_rank must be at least 1 (got {})",
               o.matrix_approximation_rank);
  TANDEM_CHECK(o.start_powersgd_iter >= 0,
               "PowerSgdOptions::start_powersgd_iter must be >= 0 (got {}); 0 compresses from "
               "the first backward",
               o.start_powersgd_iter);
  TANDEM_CHECK(std::isfinite(o.min_compression_rate) && o.min_compression_rate >= 0,
               "PowerSgdOptions::min_compression_rate must be finite and >= 0 (got {})",
               o.min_compression_rate);
  TANDEM_CHECK(std::isfinite(o.orthogonalization_epsilon) && o.orthogonalization_epsilon >= 0,
               "PowerSgdOptions::orthogonalization_epsilon must be finite and >= 0 (got {}); "
               "a tiny value such as 1e-8 guards against zero columns",
               o.orthogonalization_epsilon);
}

PowerSgdBucketPlan make_powersgd_bucket_plan(const std::vector<std::vector<int64_t>>& shapes,
                                             const std::vector<int64_t>& offsets,
                                             const PowerSgdOptions& options) {
  validate_powersgd_options(options);
  TANDEM_CHECK(shapes.size() == offsets.size(),
               "make_powersgd_bucket_plan: {} shapes but {} offsets", shapes.size(),
               offsets.size());
  PowerSgdBucketPlan plan;
  for (size_t i = 0; i < shapes.size(); ++i) {
    PowerSgdTensorPlan t;
    t.offset = offsets[i];
    t.numel = 1;
    for (int64_t d : shapes[i]) t.numel *= d;
    if (shapes[i].size() >= 2 && t.numel > 0) {
      const int64_t n = shapes[i][0];
      const int64_t m = t.numel / n;
      const int64_t r = std::min({n, m, options.matrix_approximation_rank});
      // Compare in double: (n + m) * r * rate can exceed int64 for no reason here.
      const double compressed = static_cast<double>((n + m) * r) * options.min_compression_rate;
      if (compressed < static_cast<double>(n * m)) {
        t.compressed = true;
        t.rows = n;
        t.cols = m;
        t.rank = r;
        t.p_offset = plan.p_numel;
        t.q_offset = plan.q_numel;
        plan.p_numel += n * r;
        plan.q_numel += m * r;
      }
    }
    if (!t.compressed) plan.uncompressed_numel += t.numel;
    plan.tensors.push_back(t);
  }
  return plan;
}

void orthogonalize_columns(const at::Tensor& matrix, double epsilon) {
  TANDEM_CHECK(matrix.dim() == 2 && matrix.is_floating_point(),
               "orthogonalize_columns: expected a 2-D floating-point matrix (got {}-D {})",
               matrix.dim(), c10::toString(matrix.scalar_type()));
  const int64_t cols = matrix.size(1);
  for (int64_t i = 0; i < cols; ++i) {
    at::Tensor col = matrix.narrow(1, i, 1);
    const double norm = col.norm().item<double>();
    if (norm + epsilon == 0) continue;  // a zero column: leave it, do not make NaN
    col.div_(norm + epsilon);
    if (i + 1 < cols) {
      at::Tensor rest = matrix.narrow(1, i + 1, cols - i - 1);
      rest.sub_((col * rest).sum(0, /*keepdim=*/true) * col);
    }
  }
}

}  // namespace tandem::parallel
