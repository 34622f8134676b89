#include "tandem/sim/cost_model.h"

#include "tandem/core/check.h"

namespace tandem::sim {
namespace {

void check_group(double bytes, int n, const char* what) {
  TANDEM_CHECK(n >= 1, "cost model: {} needs a group of at least 1 rank (got {})", what, n);
  TANDEM_CHECK(bytes >= 0, "cost model: {} of a negative size ({} bytes)", what, bytes);
}

bool is_power_of_two(int n) { return n > 0 && (n & (n - 1)) == 0; }

int floor_log2(int n) {
  int k = 0;
  while ((2 << k) <= n) ++k;
  return k;
}

}  // namespace

LinkParams LinkParams::from_bandwidth(double bits_per_s, double latency_s) {
  TANDEM_CHECK(bits_per_s > 0 && latency_s >= 0,
               "a link needs a bandwidth > 0 and a latency >= 0 (got {} bit/s, {} s)", bits_per_s,
               latency_s);
  return {.alpha_s = latency_s, .beta_s_per_byte = 8.0 / bits_per_s};
}

int ceil_log2(int n) {
  int k = 0;
  while ((1 << k) < n) ++k;
  return k;
}

double ring_all_reduce_s(double bytes, int n, const LinkParams& link) {
  check_group(bytes, n, "all_reduce");
  return 2.0 * (n - 1) * link.message_s(bytes / n);
}

double ring_reduce_scatter_s(double bytes, int n, const LinkParams& link) {
  check_group(bytes, n, "reduce_scatter");
  return (n - 1) * link.message_s(bytes / n);
}

double ring_all_gather_s(double bytes, int n, const LinkParams& link) {
  check_group(bytes, n, "all_gather");
  return (n - 1) * link.message_s(bytes / n);
}

double tree_all_reduce_s(double bytes, int n, const LinkParams& link) {
  check_group(bytes, n, "all_reduce");
  return 2.0 * ceil_log2(n) * link.message_s(bytes);
}

double halving_doubling_all_reduce_s(double bytes, int n, const LinkParams& link) {
  check_group(bytes, n, "all_reduce");
  if (n == 1) return 0;
  const int p = 1 << floor_log2(n);  // the power-of-two core
  const double core = 2.0 * floor_log2(n) * link.alpha_s +
                      2.0 * (p - 1) / p * bytes * link.beta_s_per_byte;
  return is_power_of_two(n) ? core : core + 2.0 * link.message_s(bytes);
}

double tree_broadcast_s(double bytes, int n, const LinkParams& link) {
  check_group(bytes, n, "broadcast");
  return ceil_log2(n) * link.message_s(bytes);
}

double hierarchical_all_reduce_s(double bytes, int local, int nodes, const LinkParams& intra,
                                 const LinkParams& inter) {
  check_group(bytes, local, "hierarchical all_reduce (devices per node)");
  check_group(bytes, nodes, "hierarchical all_reduce (nodes)");
  return ring_reduce_scatter_s(bytes, local, intra) +
         ring_all_reduce_s(bytes / local, nodes, inter) + ring_all_gather_s(bytes, local, intra);
}

double collective_s(LinkOp op, Algorithm algorithm, double bytes, int n, const LinkParams& link) {
  check_group(bytes, n, "an operation");
  if (op == LinkOp::kSendRecv) return n == 1 ? 0 : link.message_s(bytes);
  const bool ring = algorithm == Algorithm::kRing || algorithm == Algorithm::kDirect;
  switch (op) {
    case LinkOp::kAllReduce:
      if (ring) return ring_all_reduce_s(bytes, n, link);
      if (algorithm == Algorithm::kTree) return tree_all_reduce_s(bytes, n, link);
      if (algorithm == Algorithm::kHalvingDoubling) {
        return halving_doubling_all_reduce_s(bytes, n, link);
      }
      break;
    case LinkOp::kReduceScatter:
      if (ring) return ring_reduce_scatter_s(bytes, n, link);
      break;
    case LinkOp::kAllGather:
      if (ring) return ring_all_gather_s(bytes, n, link);
      break;
    case LinkOp::kBroadcast:
      if (ring || algorithm == Algorithm::kTree) return tree_broadcast_s(bytes, n, link);
      break;
    case LinkOp::kSendRecv:
      break;
  }
  TANDEM_CHECK(false, "cost model: no formula for {} by the {} algorithm on one flat group",
               name_of(op), name_of(algorithm));
  return 0;
}

LinkParams link_from_fit(LinkOp op, Algorithm algorithm, int n, double alpha_op_s,
                         double beta_op_s_per_byte) {
  TANDEM_CHECK(n >= 2 || op == LinkOp::kSendRecv,
               "cost model: a fit of {} on {} rank(s) says nothing about links; profile at "
               "least 2 processes",
               name_of(op), n);
  // collective_s is affine in alpha and beta separately: evaluate its
  // coefficients with unit links and divide.
  const double per_alpha = collective_s(op, algorithm, 0, n, {.alpha_s = 1, .beta_s_per_byte = 0});
  const double per_beta =
      collective_s(op, algorithm, 1, n, {.alpha_s = 0, .beta_s_per_byte = 1});
  TANDEM_ASSERT(per_alpha > 0 && per_beta > 0, "degenerate cost formula for {} on {} ranks",
                name_of(op), n);
  return {.alpha_s = alpha_op_s / per_alpha, .beta_s_per_byte = beta_op_s_per_byte / per_beta};
}

}  // namespace tandem::sim
