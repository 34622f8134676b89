#include "tandem/sim/network.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "tandem/core/check.h"

namespace tandem::sim {
namespace {

bool matches(const LinkFit& fit, const LinkSpec& spec, LinkOp op) {
  return fit.transport == *spec.from_profile && fit.op == op &&
         (spec.label.empty() || fit.label == spec.label);
}

// The formula a fit's algorithm stands for: the backend's own choice is
// taken as ring, what the shm and Gloo backends run for large buffers.
Algorithm formula_of(Algorithm a) { return a == Algorithm::kDirect ? Algorithm::kRing : a; }

}  // namespace

Network::Network(const ClusterSpec& cluster, const std::vector<LinkFit>& links)
    : cluster_(cluster), links_(links) {
  for (const LinkSpec* spec : {&cluster_.intra, &cluster_.network}) {
    if (!spec->from_profile) continue;
    const bool any = std::any_of(links_.begin(), links_.end(), [&](const LinkFit& f) {
      return f.transport == *spec->from_profile && (spec->label.empty() || f.label == spec->label);
    });
    TANDEM_CHECK(any,
                 "simulate: the cluster takes its {} link from the profile's '{}' fits{}, but the "
                 "profile has none; run `tandem profile links` over that transport, or give "
                 "bandwidth_gbps and latency_us instead",
                 spec == &cluster_.intra ? "intra_node" : "network", name_of(*spec->from_profile),
                 spec->label.empty() ? "" : " labelled '" + spec->label + "'");
  }
}

LinkParams Network::link_for(const LinkSpec& spec, LinkOp op, int n, const LinkFit** exact) const {
  *exact = nullptr;
  if (!spec.from_profile) return spec.nominal;
  // This op if measured, else all_reduce, else send_recv: the nearest size.
  for (LinkOp candidate : {op, LinkOp::kAllReduce, LinkOp::kSendRecv}) {
    const LinkFit* best = nullptr;
    for (const LinkFit& f : links_) {
      if (!matches(f, spec, candidate)) continue;
      if (candidate != LinkOp::kSendRecv && f.ranks < 2) continue;
      if (!best || std::abs(f.ranks - n) < std::abs(best->ranks - n) ||
          (std::abs(f.ranks - n) == std::abs(best->ranks - n) && f.ranks < best->ranks)) {
        best = &f;
      }
    }
    if (!best) continue;
    if (candidate == op && best->ranks == n) *exact = best;
    return link_from_fit(candidate, formula_of(best->algorithm), best->ranks, best->alpha_s,
                         best->beta_s_per_byte);
  }
  TANDEM_ASSERT(false, "no fit for transport {} although the constructor found one",
                name_of(*spec.from_profile));
  return {};
}

double Network::flat_s(const LinkSpec& spec, LinkOp op, Algorithm a, double bytes, int n,
                       double beta_factor, double alpha_factor) const {
  const LinkFit* exact = nullptr;
  LinkParams link = link_for(spec, op, n, &exact);
  if (exact && beta_factor == 1 && alpha_factor == 1 &&
      (op == LinkOp::kSendRecv || formula_of(exact->algorithm) == formula_of(a))) {
    return exact->seconds(bytes);
  }
  link.alpha_s *= alpha_factor;
  link.beta_s_per_byte *= beta_factor;
  return collective_s(op, a, bytes, n, link);
}

double Network::op_s(LinkOp op, double bytes, int n, int first) const {
  TANDEM_CHECK(n >= 1, "simulate: an operation over {} ranks", n);
  if (n == 1) return 0;
  const int dpn = cluster_.devices_per_node;
  const int first_node = node_of(first);
  const int last_node = node_of(first + n - 1);
  const int nodes = last_node - first_node + 1;
  if (nodes == 1 || cluster_.topology == Topology::kSingleHost) {
    const Algorithm a = op == LinkOp::kAllReduce
                            ? cluster_.all_reduce_algorithm.value_or(Algorithm::kRing)
                            : Algorithm::kRing;
    return flat_s(cluster_.intra, op, a == Algorithm::kHierarchical ? Algorithm::kRing : a, bytes,
                  n, 1, 1);
  }
  const int local = std::min(n, dpn);
  double beta = 1, alpha = 1;
  if (cluster_.topology == Topology::kFatTree && nodes > cluster_.leaf_nodes) {
    beta *= cluster_.oversubscription;
  }
  Algorithm a = Algorithm::kRing;
  if (op == LinkOp::kAllReduce) {
    a = cluster_.all_reduce_algorithm.value_or(local > 1 ? Algorithm::kHierarchical
                                                         : Algorithm::kRing);
  }
  if (a == Algorithm::kTree || a == Algorithm::kHalvingDoubling) {
    beta *= local;  // every device of a node sends through its NIC at once
    if (cluster_.topology == Topology::kRing) {
      const double hops = std::max(1.0, nodes / 4.0);
      alpha *= hops;
      beta *= hops;
    }
  }
  if (op == LinkOp::kAllReduce && a == Algorithm::kHierarchical) {
    if (local == 1) return flat_s(cluster_.network, op, Algorithm::kRing, bytes, nodes, beta, alpha);
    const double intra_rs = flat_s(cluster_.intra, LinkOp::kReduceScatter, Algorithm::kRing,
                                   bytes, local, 1, 1);
    const double inter = flat_s(cluster_.network, LinkOp::kAllReduce, Algorithm::kRing,
                                bytes / local, nodes, beta, alpha);
    const double intra_ag = flat_s(cluster_.intra, LinkOp::kAllGather, Algorithm::kRing, bytes,
                                   local, 1, 1);
    return intra_rs + inter + intra_ag;
  }
  // A flat ring across nodes crosses each NIC once per direction; its
  // slowest hop is the NIC.
  return flat_s(cluster_.network, op, a, bytes, n, beta, alpha);
}

LinkParams Network::textbook_link(int n) const {
  const bool across = node_of(n - 1) > 0 && cluster_.topology != Topology::kSingleHost;
  const LinkFit* exact = nullptr;
  // The textbook takes one link (the point-to-point one when measured).
  return link_for(across ? cluster_.network : cluster_.intra, LinkOp::kSendRecv, 2, &exact);
}

double Network::textbook_all_reduce_s(double bytes, int n) const {
  if (n <= 1) return 0;
  return ring_all_reduce_s(bytes, n, textbook_link(n));
}

double Network::textbook_message_s(double bytes, int n) const {
  if (n <= 1) return 0;
  return textbook_link(n).message_s(bytes);
}

}  // namespace tandem::sim
