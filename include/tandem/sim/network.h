// Network: what an operation costs on a cluster for a group of ranks placed
// on it. Ranks fill nodes in order (devices_per_node each). A group inside
// one node uses the intra-node link; a group across nodes uses the NIC, with
// the topology's penalties:
//   fat_tree: beyond `leaf_nodes` nodes, traffic crosses the oversubscribed
//             core, so the NIC's share of bandwidth is 1 / oversubscription;
//   ring:     a message between non-neighbours crosses nodes/4 hops on
//             average, so algorithms other than ring pay that in latency and
//             share of bandwidth;
//   and tree and halving-doubling send from every device of a node at once,
//   so their per-rank bandwidth is the NIC's over devices_per_node.
// The all-reduce algorithm is the cluster's (auto: hierarchical across
// nodes with several devices, ring otherwise).
//
// A measured link (LinkSpec::from_profile) takes the profile's fits for that
// transport: an operation measured at the very group size is used as fitted;
// otherwise the link's alpha and beta are recovered from the fit at the
// nearest measured size (link_from_fit) and the algorithm's formula is applied
// at the group's size. That is how 2 measured processes predict 4.
//
// Immutable after construction: thread-safe. Nothing collective.
#pragma once

#include <vector>

#include "tandem/sim/cluster.h"
#include "tandem/sim/cost_model.h"
#include "tandem/sim/profile.h"

namespace tandem::sim {

class Network {
 public:
  // Throws InvalidArgument if a link asks for fits the profile does not have.
  Network(const ClusterSpec& cluster, const std::vector<LinkFit>& links);

  // Seconds for `op` of `bytes` over a group of `n` ranks, placed from rank
  // `first` on (ranks first..first+n-1). send_recv: one message between the
  // first and last rank of the group.
  double op_s(LinkOp op, double bytes, int n, int first = 0) const;
  // The plain ring formula over the slowest link the group uses, with no
  // topology penalty: the textbook estimate.
  double textbook_all_reduce_s(double bytes, int n) const;
  // One message of `bytes` over that link: alpha + bytes x beta.
  double textbook_message_s(double bytes, int n) const;

  int node_of(int rank) const { return rank / cluster_.devices_per_node; }
  const ClusterSpec& cluster() const { return cluster_; }

 private:
  // Per-link parameters of `spec` for `op` at group size n; `exact` is set
  // to the op-level fit when one was measured at exactly n.
  LinkParams link_for(const LinkSpec& spec, LinkOp op, int n, const LinkFit** exact) const;
  // The one link the textbook takes for a group of n ranks: the NIC when
  // the group spans nodes, else the intra-node link (point to point).
  LinkParams textbook_link(int n) const;
  double flat_s(const LinkSpec& spec, LinkOp op, Algorithm a, double bytes, int n,
                double beta_factor, double alpha_factor) const;

  ClusterSpec cluster_;
  std::vector<LinkFit> links_;
};

}  // namespace tandem::sim
