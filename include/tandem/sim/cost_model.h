// The alpha-beta cost model of collectives and messages (Hockney; Thakur,
// Rabenseifner and Gropp 2005): a message of S bytes over one link costs
// alpha + S * beta, and each algorithm is a number of such steps. These are
// the textbook formulas, as plain functions, so tests check them against
// hand-computed cases and the simulator (step_simulator.h) composes them with
// overlap and contention. `bytes` is always the whole buffer of the
// operation on one rank (all_gather: the gathered result).
//
// Pure functions: thread-safe, nothing collective.
#pragma once

#include <cstdint>

#include "tandem/sim/profile.h"

namespace tandem::sim {

// One link: latency per message and seconds per byte (1 / bandwidth).
struct LinkParams {
  double alpha_s = 0;
  double beta_s_per_byte = 0;

  double message_s(double bytes) const { return alpha_s + bytes * beta_s_per_byte; }
  // From a bandwidth in bits per second and a latency in seconds.
  static LinkParams from_bandwidth(double bits_per_s, double latency_s);
};

// Ring: 2(n-1)(alpha + S beta / n) for all_reduce, (n-1)(alpha + S beta / n)
// for reduce_scatter and all_gather.
double ring_all_reduce_s(double bytes, int n, const LinkParams& link);
double ring_reduce_scatter_s(double bytes, int n, const LinkParams& link);
double ring_all_gather_s(double bytes, int n, const LinkParams& link);
// Binomial tree: reduce then broadcast, 2 ceil(log2 n) (alpha + S beta).
double tree_all_reduce_s(double bytes, int n, const LinkParams& link);
// Recursive halving then doubling (Rabenseifner): 2 log2(n) alpha +
// 2 (n-1)/n S beta for a power of two; other n pay two more full messages
// to fold the extra ranks in and out.
double halving_doubling_all_reduce_s(double bytes, int n, const LinkParams& link);
// Binomial-tree broadcast: ceil(log2 n) (alpha + S beta).
double tree_broadcast_s(double bytes, int n, const LinkParams& link);
// Two levels: reduce-scatter inside each node (ring over `local`), all-reduce
// of the 1/local shard across `nodes` (ring), all-gather inside the node.
double hierarchical_all_reduce_s(double bytes, int local, int nodes, const LinkParams& intra,
                                 const LinkParams& inter);

// An operation by algorithm over one flat group of n ranks and one link
// kind. kDirect means ring for the collectives and one message for
// send_recv. Throws InvalidArgument for n < 1, negative bytes, or an
// (op, algorithm) pair without a formula (kHierarchical needs two levels:
// use hierarchical_all_reduce_s).
double collective_s(LinkOp op, Algorithm algorithm, double bytes, int n, const LinkParams& link);

// The inverse: the per-link parameters that make collective_s(op, algorithm,
// bytes, n, link) equal a fit of the whole operation (alpha_op + beta_op *
// bytes) measured at group size n. This is how a profile measured on 2
// processes predicts 4: the link is recovered from the small group and the
// algorithm's formula is applied at the large one.
LinkParams link_from_fit(LinkOp op, Algorithm algorithm, int n, double alpha_op_s,
                         double beta_op_s_per_byte);

// ceil(log2 n) for n >= 1.
int ceil_log2(int n);

}  // namespace tandem::sim
