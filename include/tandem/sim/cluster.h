// ClusterSpec: the machine `tandem simulate` predicts, read from a YAML file
// (docs/lab.md lists every key):
//   nodes:      devices per node, compute speed relative to the profile, and
//               the CPU cores that the node's ranks share (0: one per rank),
//               optionally with each core's speed
//   intra_node: the link between devices of a node
//   network:    the NIC: bandwidth and latency
//   topology:   single_host | fat_tree (with an oversubscription ratio and
//               the nodes under one leaf switch) | ring
//   collectives: the all-reduce algorithm (ring, tree, halving_doubling,
//               hierarchical, or auto: hierarchical across nodes, ring inside)
//   stragglers: a per-step slowdown distribution, and slow nodes or ranks
//   failures:   MTTF per node, checkpoint write time and interval, recovery
//               times for restart-all and for keep-survivors
// A link is either nominal (bandwidth_gbps, latency_us) or measured
// (`profile: gloo` takes the alpha-beta fits of that transport from the
// profile, optionally `label:` to pick one sweep).
//
// Plain data; parse_cluster() throws tandem::InvalidArgument with one line
// naming the file and the key for anything malformed. Thread-compatible.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tandem/sim/cost_model.h"
#include "tandem/sim/profile.h"

namespace tandem::sim {

enum class Topology { kSingleHost, kFatTree, kRing };
// kProfile draws each rank's step factor from the profile's own timed
// steps (step_times_s over their median): the jitter of the machine the
// profile was taken on.
enum class SlowdownDistribution { kNone, kLogNormal, kUniform, kProfile };

struct LinkSpec {
  // Nominal: from bandwidth and latency.
  LinkParams nominal;
  // Measured: the profile's fits of this transport (and label, if set).
  std::optional<Transport> from_profile;
  std::string label;
};

struct SlowNode {
  int node = 0;
  double factor = 1;  // its compute takes `factor` times as long
};
struct SlowRank {
  int rank = 0;
  double factor = 1;
};

struct FailureSpec {
  double mttf_node_s = 0;  // 0: no failures modelled
  double checkpoint_write_s = 0;
  double checkpoint_interval_s = 0;  // 0: the Young/Daly interval
  double restart_all_recovery_s = 0;
  double keep_survivors_recovery_s = 0;
};

struct ClusterSpec {
  std::string name;
  int devices_per_node = 1;
  double compute_speed = 1;  // > 1: faster than the profiled process
  int cores_per_node = 0;    // 0: every rank has its own core(s)
  // The speed of each of those cores relative to the profiled one (a VM's
  // vCPUs can differ by 20%); empty: all alike. Sets cores_per_node.
  std::vector<double> core_speeds;
  LinkSpec intra;
  LinkSpec network;
  Topology topology = Topology::kFatTree;
  double oversubscription = 1;  // fat tree: core bandwidth ratio, >= 1
  int leaf_nodes = 16;          // fat tree: nodes under one leaf switch
  std::optional<Algorithm> all_reduce_algorithm;  // nullopt: auto
  SlowdownDistribution slowdown = SlowdownDistribution::kNone;
  double slowdown_sigma = 0;  // lognormal: sigma of log(slowdown)
  double slowdown_max = 1;    // uniform: slowdown drawn in [1, max]
  std::vector<SlowNode> slow_nodes;
  std::vector<SlowRank> slow_ranks;
  FailureSpec failures;
};

// `source` names the text in errors.
ClusterSpec parse_cluster(const std::string& yaml_text, const std::string& source);
ClusterSpec read_cluster(const std::string& path);

}  // namespace tandem::sim
