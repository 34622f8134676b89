// What every strategy's step builder shares: the profile scaled to the
// simulated batch and machine, the network, and the straggler draws. Private
// to src/sim/.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "tandem/sim/cluster.h"
#include "tandem/sim/network.h"
#include "tandem/sim/profile.h"
#include "tandem/sim/strategy_spec.h"
#include "tandem/sim/task_graph.h"

namespace tandem::sim::detail {

struct StepContext {
  const ComputeProfile& profile;
  const ClusterSpec& cluster;
  const StrategySpec& strategy;
  const Network& net;
  int processes = 1;
  int workers = 1;  // the ranks that compute
  // Per layer, seconds on a rank of speed 1 at the simulated batch.
  std::vector<double> forward_s = {}, backward_s = {};
  double other_s = 0;
  double optimizer_s = 0;
  double param_bytes = 0;
  double batch_scale = 1;  // simulated batch / profiled batch (activations)

  double compute_s() const;  // forward + other + backward + optimizer
};

// Throws InvalidArgument naming the input unless `profile` and `st` can be
// simulated at `processes` (simulate() and WorkerTimes check with it).
void check_inputs(const ComputeProfile& profile, const StrategySpec& st, int processes);
// The compute stream's slowdown when a node's computing ranks outnumber its
// cores (1 otherwise).
double oversubscription(const ClusterSpec& c, int computing_ranks);
// The ranks that compute: ps leaves out its servers.
int computing_ranks(const StrategySpec& st, int processes);
// The profile scaled to the simulated batch and the cluster's speed.
StepContext make_context(const ComputeProfile& profile, const ClusterSpec& cluster,
                         const StrategySpec& st, const Network& net, int processes);

// The result of one strategy's simulated steps.
struct StepOutcome {
  double step_s = 0;     // mean step time after warm-up
  double compute_s = 0;  // a typical rank's compute per step
  TaskGraph graph;       // the last simulated step(s), for the trace
  std::vector<TaskGraph::Timing> timing;
};

// Draws compute slowdowns: the cluster's slow nodes and ranks, the speed of
// the core a rank runs on (when the node has a core per computing rank),
// and the per-step distribution, from a fixed seed.
class Slowdowns {
 public:
  // `profile` supplies the samples of SlowdownDistribution::kProfile.
  Slowdowns(const ClusterSpec& cluster, uint64_t seed, int computing_ranks,
            const ComputeProfile& profile);
  // The factor of `rank` (its node's, times one fresh draw).
  double draw(int rank);
  // The largest factor among ranks first, first + stride, ... (n of them),
  // one fresh draw each.
  double draw_max(int first, int n, int stride = 1);

 private:
  double node_factor(int rank) const;
  double sample();
  const ClusterSpec& cluster_;
  bool own_cores_;               // every computing rank of a node has a core of its own
  std::vector<double> samples_;  // kProfile: the profiled steps over their median
  std::mt19937_64 rng_;
};

// The layers' gradient buckets in backward order, by the DDP cap: each entry
// is the layer indices (descending) of one bucket.
std::vector<std::vector<int>> gradient_buckets(const ComputeProfile& profile, int64_t cap_bytes);

StepOutcome data_parallel_step(const StepContext& ctx, Slowdowns& slow, int steps);
StepOutcome parameter_server_step(const StepContext& ctx, Slowdowns& slow, int steps);
StepOutcome pipeline_step(const StepContext& ctx, Slowdowns& slow, int steps);

}  // namespace tandem::sim::detail
