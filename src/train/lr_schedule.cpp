#include "tandem/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace tandem::train {

double learning_rate(LrSchedule schedule, double base_lr, int64_t step, int64_t warmup_steps,
                     int64_t total_steps) {
  if (warmup_steps > 0 && step < warmup_steps) {
    return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  }
  const double span = static_cast<double>(std::max<int64_t>(total_steps - warmup_steps, 1));
  const double t = std::clamp(static_cast<double>(step - warmup_steps) / span, 0.0, 1.0);
  switch (schedule) {
    case LrSchedule::kConstant:
      return base_lr;
    case LrSchedule::kCosine:
      return base_lr * 0.5 * (1.0 + std::cos(M_PI * t));
    case LrSchedule::kStep:
      return base_lr * (t >= 0.75 ? 0.01 : t >= 0.5 ? 0.1 : 1.0);
  }
  return base_lr;
}

}  // namespace tandem::train
