// Learning-rate schedules: pure functions of the step, so every rank (and a
// resumed run) computes the same rate. Linear warmup from 0 over
// `warmup_steps`, then constant, cosine decay to 0 at `total_steps`, or step
// decay (x0.1 at 50% and 75% of the run).
#pragma once

#include <cstdint>

namespace tandem::train {

// --lr-schedule; its spellings (constant, cosine, step) are
// Choices<LrSchedule> in choices.h.
enum class LrSchedule { kConstant, kCosine, kStep };

// The rate at `step` (0-based) of a run of `total_steps`.
double learning_rate(LrSchedule schedule, double base_lr, int64_t step, int64_t warmup_steps,
                     int64_t total_steps);

}  // namespace tandem::train
