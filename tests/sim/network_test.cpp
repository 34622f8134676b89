#include "tandem/sim/network.h"

#include <gtest/gtest.h>

#include "tandem/core/error.h"

namespace tandem::sim {
namespace {

ClusterSpec nodes_of(int devices) {
  ClusterSpec c;
  c.devices_per_node = devices;
  c.intra.nominal = {.alpha_s = 1e-6, .beta_s_per_byte = 1e-11};
  c.network.nominal = {.alpha_s = 1e-5, .beta_s_per_byte = 1e-9};
  return c;
}

TEST(Network, InsideANodeTheIntraLinkAcrossNodesTheNic) {
  const Network net(nodes_of(4), {});
  EXPECT_DOUBLE_EQ(net.op_s(LinkOp::kAllReduce, 1e6, 4),
                   ring_all_reduce_s(1e6, 4, {.alpha_s = 1e-6, .beta_s_per_byte = 1e-11}));
  // 8 ranks on 2 nodes of 4: hierarchical by default.
  EXPECT_DOUBLE_EQ(net.op_s(LinkOp::kAllReduce, 1e6, 8),
                   hierarchical_all_reduce_s(1e6, 4, 2, {.alpha_s = 1e-6, .beta_s_per_byte = 1e-11},
                                             {.alpha_s = 1e-5, .beta_s_per_byte = 1e-9}));
  const Network flat(nodes_of(1), {});
  EXPECT_DOUBLE_EQ(flat.op_s(LinkOp::kAllReduce, 1e6, 8),
                   ring_all_reduce_s(1e6, 8, {.alpha_s = 1e-5, .beta_s_per_byte = 1e-9}));
  EXPECT_EQ(flat.op_s(LinkOp::kAllReduce, 1e6, 1), 0);
}

TEST(Network, AnOversubscribedCoreCostsBandwidthBeyondOneLeaf) {
  ClusterSpec c = nodes_of(1);
  c.oversubscription = 4;
  c.leaf_nodes = 4;
  const Network net(c, {});
  EXPECT_DOUBLE_EQ(net.op_s(LinkOp::kAllReduce, 1e6, 4),
                   ring_all_reduce_s(1e6, 4, {.alpha_s = 1e-5, .beta_s_per_byte = 1e-9}));
  EXPECT_DOUBLE_EQ(net.op_s(LinkOp::kAllReduce, 1e6, 8),
                   ring_all_reduce_s(1e6, 8, {.alpha_s = 1e-5, .beta_s_per_byte = 4e-9}));
}

LinkFit fit(LinkOp op, int ranks, double alpha, double beta) {
  LinkFit f;
  f.transport = Transport::kShm;
  f.op = op;
  f.ranks = ranks;
  f.alpha_s = alpha;
  f.beta_s_per_byte = beta;
  return f;
}

TEST(Network, MeasuredFitsAreUsedAsFittedOrScaledByTheFormula) {
  ClusterSpec c = nodes_of(8);
  c.intra.from_profile = Transport::kShm;
  // A 2-rank all-reduce measured at 20 us + 1 ns/B.
  const Network net(c, {fit(LinkOp::kAllReduce, 2, 2e-5, 1e-9)});
  EXPECT_DOUBLE_EQ(net.op_s(LinkOp::kAllReduce, 1e6, 2), 2e-5 + 1e-3);
  // At 4 ranks: the ring link recovered from 2 (alpha 10 us, beta 1 ns/B),
  // then 2 (4 - 1)(alpha + S beta / 4).
  EXPECT_NEAR(net.op_s(LinkOp::kAllReduce, 1e6, 4), 6 * (1e-5 + 2.5e-4), 1e-12);
  // No reduce_scatter fit: the all-reduce's link serves.
  EXPECT_NEAR(net.op_s(LinkOp::kReduceScatter, 1e6, 4), 3 * (1e-5 + 2.5e-4), 1e-12);
  // A fit at the very size wins.
  const Network both(c, {fit(LinkOp::kAllReduce, 2, 2e-5, 1e-9),
                         fit(LinkOp::kAllReduce, 4, 1e-4, 2e-9)});
  EXPECT_DOUBLE_EQ(both.op_s(LinkOp::kAllReduce, 1e6, 4), 1e-4 + 2e-3);
}

TEST(Network, AMissingTransportIsRefused) {
  ClusterSpec c = nodes_of(1);
  c.network.from_profile = Transport::kGloo;
  try {
    Network net(c, {fit(LinkOp::kAllReduce, 2, 1e-5, 1e-9)});
    ADD_FAILURE() << "accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("network link"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("gloo"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem::sim
