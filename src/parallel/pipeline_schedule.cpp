#include "tandem/parallel/pipeline_schedule.h"

#include <algorithm>

#include "tandem/core/check.h"

namespace tandem::parallel {

std::vector<PipelineAction> pipeline_schedule(PipelineScheduleKind kind, int stage, int stages,
                                              int micro_batches) {
  TANDEM_CHECK(stages >= 1 && stage >= 0 && stage < stages,
               "pipeline schedule: stage {} is outside [0, {})", stage, stages);
  TANDEM_CHECK(micro_batches >= 1, "pipeline schedule: micro_batches must be >= 1 (got {})",
               micro_batches);
  std::vector<PipelineAction> out;
  out.reserve(2 * static_cast<size_t>(micro_batches));
  const int m = micro_batches;
  const int warmup = kind == PipelineScheduleKind::kGPipe ? m : std::min(stages - stage - 1, m);
  int next_forward = 0;
  int next_backward = 0;
  for (; next_forward < warmup; ++next_forward) out.push_back({true, next_forward});
  while (next_forward < m) {  // steady state: one forward, one backward
    out.push_back({true, next_forward++});
    out.push_back({false, next_backward++});
  }
  for (; next_backward < m; ++next_backward) out.push_back({false, next_backward});
  return out;
}

int max_in_flight(const std::vector<PipelineAction>& actions) {
  int now = 0, most = 0;
  for (const auto& a : actions) {
    now += a.forward ? 1 : -1;
    most = std::max(most, now);
  }
  return most;
}

double theoretical_bubble_fraction(int stages, int micro_batches) {
  TANDEM_CHECK(stages >= 1 && micro_batches >= 1,
               "bubble fraction: stages and micro_batches must be >= 1");
  return static_cast<double>(stages - 1) / static_cast<double>(micro_batches + stages - 1);
}

std::vector<int> balanced_cut_points(const std::vector<int64_t>& layer_numel, int stages) {
  const int layers = static_cast<int>(layer_numel.size());
  TANDEM_CHECK(stages >= 1 && layers >= stages,
               "pipeline: {} layers cannot make {} stages of at least one layer each", layers,
               stages);
  int64_t total = 0;
  for (int64_t n : layer_numel) total += n;
  std::vector<int> starts = {0};
  int64_t seen = 0;
  for (int l = 0; l < layers && static_cast<int>(starts.size()) < stages; ++l) {
    seen += layer_numel[static_cast<size_t>(l)];
    const int s = static_cast<int>(starts.size());
    // Cut after layer l once this stage reached its even share, keeping one
    // layer for each stage still to come.
    const bool share = seen * stages >= total * s;
    const bool must = layers - (l + 1) == stages - s;
    if ((share || must) && l + 1 < layers) starts.push_back(l + 1);
  }
  return starts;
}

}  // namespace tandem::parallel
