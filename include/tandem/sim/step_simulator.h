// The simulator's entry point: one training step of a strategy on a cluster,
// from a compute profile and link fits, at a given number of processes.
//
// It builds the step as a TaskGraph (task_graph.h) over the ranks that
// differ (a typical rank and the slowest one for the data-parallel family;
// every worker and server for the parameter server; every stage for the
// pipeline), with per-layer compute, DDP's bucket readiness and in-order
// all-reduces overlapping backward, ZeRO's reduce-scatters and gathers (with
// FSDP's prefetch), the pipeline's schedule and point-to-point transfers,
// the parameter server's incast and staleness bound, gossip and local SGD.
// Collectives cost what the alpha-beta model (cost_model.h) says for the
// group's placement on the cluster (network.h). Stragglers are drawn per
// step from the cluster's distribution, with a fixed seed.
//
// Beside it, textbook_step_s is the usual back-of-the-envelope model: all
// compute, then the ring formula for every gradient byte, no overlap, no
// contention; the lab reports both, so the gain is measured.
//
// Pure computation: thread-compatible, nothing collective. Throws
// InvalidArgument naming the input for a configuration it cannot simulate.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tandem/sim/cluster.h"
#include "tandem/sim/profile.h"
#include "tandem/sim/strategy_spec.h"

namespace tandem::sim {

struct SimOptions {
  int steps = 6;       // steps simulated (stragglers, ps, gossip); the first is warm-up
  uint64_t seed = 1;   // straggler draws
  std::string trace_path = {};  // non-empty: write one simulated step as a Perfetto trace
};

struct SimResult {
  int processes = 0;       // the world size simulated
  int workers = 0;         // the ranks that compute (ps: processes - servers)
  double step_s = 0;       // mean time of one step (ps, gossip: per worker)
  double compute_s = 0;    // a typical rank's compute in one step
  double exposed_comm_s = 0;   // step_s - compute_s: what overlap did not hide
  double samples_per_s = 0;    // global throughput
  double efficiency = 0;   // throughput / (workers x one process's throughput)
  int64_t memory_bytes = 0;    // model state + activations on the fullest rank
  double textbook_step_s = 0;  // all compute + ring all-reduce of every gradient
  // Failures (cluster.failures, when MTTF > 0): the checkpoint interval used
  // (Young/Daly unless set) and the fraction of time that trains.
  double checkpoint_interval_s = 0;
  double goodput_restart_all = 1;
  double goodput_keep_survivors = 1;
};

SimResult simulate(const ComputeProfile& profile, const std::vector<LinkFit>& links,
                   const ClusterSpec& cluster, const StrategySpec& strategy, int processes,
                   const SimOptions& options = {});

// The Young/Daly checkpoint interval sqrt(2 delta M) - delta for a write of
// `write_s` and a system MTTF of `mttf_s` (delta < 2M), else M.
double young_daly_interval_s(double write_s, double mttf_s);

}  // namespace tandem::sim
