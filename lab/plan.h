// `tandem plan`: the configurations a job could run with on a cluster,
// predicted by the simulator and ranked. It searches the data x pipeline
// degrees (pp dividing the world), the ZeRO stage (ddp, zero1-3), the
// pipeline's micro-batches, and the asynchronous strategies (ps, gossip,
// local-sgd); it drops what does not fit the device memory, weighs each by
// its goodput under the cluster's failures (with the Young/Daly checkpoint
// interval), and explains the first choice against the others in one
// paragraph. Tensor parallelism is not searched: the simulator does not
// model it yet. Asynchronous rows rank by throughput only: their steps are
// not the synchronous ones' (`tandem lab converge` measures how many they
// need), so the recommendation is the best synchronous configuration.
// Pure computation over the simulator; not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lab/simulate_run.h"
#include "tandem/sim/step_simulator.h"
#include "tandem/train/options.h"

namespace tandem::lab {

struct PlanOptions {
  int workers = 8;            // processes (devices) the job gets
  int64_t device_memory = 0;  // bytes per device; 0: no limit
  double mttf_hours = 0;      // per node; > 0 overrides the cluster's failures.mttf_node_hours
  int top = 10;               // rows printed
};

struct PlanRow {
  std::string strategy;  // "ddp", "zero2", "pipeline", "ps", ...
  std::string layout;    // "dp=8", "dp=2,pp=4 m=8", "7 workers + 1 server"
  bool synchronous = true;
  bool fits = true;
  sim::SimResult result;
  double effective_samples_per_s = 0;  // samples/s x goodput (keep survivors)
};

struct Plan {
  std::vector<PlanRow> rows;   // every configuration, best first (the ones that fit first)
  std::string recommendation;  // one paragraph
};

// `base` holds the job's other options (batch size per replica, optimizer,
// ...). Throws InvalidArgument naming the option for bad options.
Plan make_plan(const SimulationInputs& in, const train::TrainerOptions& base,
               const PlanOptions& options);

}  // namespace tandem::lab
