// WorkerTimes: the durations the scaling lab's virtual workers (`tandem lab
// converge`) place in simulated time, from the same profile, link fits,
// cluster and cost model as `tandem simulate`:
//   - one worker's local step (forward, backward, the rest and its optimizer
//     step), or its gradient alone (a parameter-server worker, whose server
//     steps), each with a fresh straggler draw for that worker;
//   - the server's optimizer step over one shard;
//   - a message or collective over a group of ranks (network.h);
//   - one synchronous data-parallel step of all the workers, as the
//     simulator builds it (bucketed all-reduces overlapping backward).
// Draws come from the cluster's straggler model with a fixed seed, so a run
// repeats. Not thread-safe (the draws); nothing collective.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tandem/sim/cluster.h"
#include "tandem/sim/profile.h"
#include "tandem/sim/strategy_spec.h"

namespace tandem::sim {

class WorkerTimes {
 public:
  // `processes`: the simulated world (ps: workers and servers). Throws
  // InvalidArgument as simulate() does for inputs it cannot simulate.
  WorkerTimes(ComputeProfile profile, std::vector<LinkFit> links, ClusterSpec cluster,
              StrategySpec strategy, int processes, uint64_t seed = 1);
  ~WorkerTimes();
  WorkerTimes(const WorkerTimes&) = delete;
  WorkerTimes& operator=(const WorkerTimes&) = delete;

  // Worker `rank`'s local step, optimizer included, this time.
  double local_step_s(int rank);
  // Worker `rank`'s forward and backward (no optimizer step), this time.
  double gradient_s(int rank);
  // One server's optimizer step over its shard of the parameters.
  double server_step_s() const;
  // `op` of `bytes` over ranks first..first+n-1 (send_recv: one message
  // between the group's first and last rank).
  double op_s(LinkOp op, double bytes, int n, int first = 0) const;
  // One synchronous step of every worker (ddp), slowest draw included.
  double sync_step_s();
  double param_bytes() const;
  int workers() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace tandem::sim
