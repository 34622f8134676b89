// Pipeline schedules as pure logic: the order in which one stage of a
// p-stage pipeline runs the forward and backward passes of m micro-batches.
//   GPipe (Huang et al. 2019): all m forwards, then all m backwards; every
//        stage holds m micro-batches' activations at its peak.
//   1F1B (PipeDream-Flush, Narayanan et al. 2021): stage s runs p - s - 1
//        warm-up forwards, then alternates one forward and one backward, then
//        drains the remaining backwards; at most p - s micro-batches are in
//        flight, whatever m.
// Both have the same bubble, (p - 1) / (m + p - 1) of each stage's time when
// forward and backward take the same time on every stage.
// No communicator; thread-compatible.
#pragma once

#include <string>
#include <vector>

namespace tandem::parallel {

enum class PipelineScheduleKind { kGPipe, k1F1B };

struct PipelineAction {
  bool forward = true;
  int micro_batch = 0;
  bool operator==(const PipelineAction&) const = default;
};

// The actions of `stage` (0-based) in order. Throws InvalidArgument unless
// 0 <= stage < stages and micro_batches >= 1. Every micro-batch appears once
// as a forward and once (later) as a backward; forwards and backwards each
// run in increasing micro-batch order.
std::vector<PipelineAction> pipeline_schedule(PipelineScheduleKind kind, int stage, int stages,
                                              int micro_batches);

// The most micro-batches forwarded but not yet backwarded at once.
int max_in_flight(const std::vector<PipelineAction>& actions);

// (p - 1) / (m + p - 1).
double theoretical_bubble_fraction(int stages, int micro_batches);

// Where each of `stages` contiguous stages starts, cutting layers whose
// parameter counts are `layer_numel` so that the largest stage is as small
// as a greedy cut at the even shares makes it; every stage gets at least one
// layer. Throws InvalidArgument if there are fewer layers than stages.
std::vector<int> balanced_cut_points(const std::vector<int64_t>& layer_numel, int stages);

}  // namespace tandem::parallel
