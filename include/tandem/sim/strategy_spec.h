// StrategySpec: what the simulator needs to know of a training strategy. The
// lab fills it from the trainer's own typed options (train::TrainerOptions,
// parsed by the same flag and YAML table as `tandem train`; see
// lab/strategy_from_options.h), so a simulated configuration is one the
// trainer can run. The pipeline's schedule arrives as data, the actions of
// each stage from parallel::pipeline_schedule, so the simulator runs the
// very order the trainer runs.
//
// Plain data: thread-compatible, nothing collective.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::sim {

enum class SimStrategy { kNone, kDdp, kZero1, kZero2, kZero3, kPs, kGossip, kLocalSgd, kPipeline };

std::string_view name_of(SimStrategy s);

// One forward or backward of one micro-batch on one stage.
struct StageAction {
  bool forward = true;
  int micro_batch = 0;
};

struct StrategySpec {
  SimStrategy kind = SimStrategy::kDdp;
  int64_t batch_size = 0;  // per worker (per data-parallel replica); 0: the profile's
  int64_t bucket_bytes = 25LL << 20;  // ddp, zero1, zero2: bucket cap
  // zero3: the layer index where each unit starts (ascending, first 0);
  // empty: one unit per profiled layer.
  std::vector<int> unit_starts;
  int prefetch = 1;  // zero3: units gathered ahead of the one computing
  // Optimizer state per parameter byte: 1 for SGD with momentum, 2 for
  // AdamW, 0 for plain SGD.
  double optimizer_state_factor = 1;
  int servers = 1;      // ps: the last `servers` ranks serve
  int staleness = -1;   // ps: the stale-synchronous bound; -1: none
  int sync_every = 4;   // local-sgd: steps between parameter averages
  // The data-parallel family (ddp, zero1-3, gossip, local-sgd): the
  // trainer's loss average, one all_reduce of a double after every
  // log_every-th step (--log-every); 0: none.
  int log_every = 0;
  // pipeline: stages, micro-batches, the layer where each stage starts, and
  // each stage's actions in order. The world is data_parallel x stages.
  int stages = 1;
  int micro_batches = 1;
  std::vector<int> stage_starts;
  std::vector<std::vector<StageAction>> schedule;
  std::string describe;  // for reports: "zero3 --bucket-cap-mb 25"
};

}  // namespace tandem::sim
