#include "tandem/sim/cost_model.h"

#include <gtest/gtest.h>

#include "tandem/core/error.h"

namespace tandem::sim {
namespace {

const LinkParams kLink{.alpha_s = 1e-5, .beta_s_per_byte = 1e-9};

TEST(CostModel, RingAllReduceIsTwoNMinusOneSteps) {
  // 2(N-1)(alpha + S beta / N) = 6 (1e-5 + 2.5e-4)
  EXPECT_NEAR(ring_all_reduce_s(1e6, 4, kLink), 1.56e-3, 1e-12);
  EXPECT_NEAR(ring_reduce_scatter_s(1e6, 4, kLink), 7.8e-4, 1e-12);
  EXPECT_NEAR(ring_all_gather_s(1e6, 4, kLink), 7.8e-4, 1e-12);
  EXPECT_EQ(ring_all_reduce_s(1e6, 1, kLink), 0);
}

TEST(CostModel, TreeAndHalvingDoubling) {
  // ceil(log2 5) = 3: 6 (1e-5 + 1e-3)
  EXPECT_NEAR(tree_all_reduce_s(1e6, 5, kLink), 6.06e-3, 1e-12);
  // 2 log2 8 alpha + 2 (7/8) S beta
  EXPECT_NEAR(halving_doubling_all_reduce_s(1e6, 8, kLink), 1.81e-3, 1e-12);
  // 6 = 4 + 2: the 4-rank core, plus two full messages to fold 2 ranks in and out.
  EXPECT_NEAR(halving_doubling_all_reduce_s(1e6, 6, kLink), 4e-5 + 1.5e-3 + 2.02e-3, 1e-12);
  EXPECT_NEAR(tree_broadcast_s(1e6, 4, kLink), 2 * 1.01e-3, 1e-12);
}

TEST(CostModel, HierarchicalIsIntraReduceScatterInterAllReduceIntraAllGather) {
  const LinkParams intra{.alpha_s = 1e-6, .beta_s_per_byte = 1e-10};
  // 3 (1e-6 + 2.5e-5) + 2 (1e-5 + 1.25e-4) + 3 (1e-6 + 2.5e-5)
  EXPECT_NEAR(hierarchical_all_reduce_s(1e6, 4, 2, intra, kLink), 7.8e-5 + 2.7e-4 + 7.8e-5,
              1e-12);
}

TEST(CostModel, CollectiveDispatchesByOpAndAlgorithm) {
  EXPECT_DOUBLE_EQ(collective_s(LinkOp::kAllReduce, Algorithm::kDirect, 1e6, 4, kLink),
                   ring_all_reduce_s(1e6, 4, kLink));
  EXPECT_DOUBLE_EQ(collective_s(LinkOp::kSendRecv, Algorithm::kDirect, 1e6, 2, kLink),
                   1e-5 + 1e-3);
  EXPECT_THROW(collective_s(LinkOp::kReduceScatter, Algorithm::kTree, 1e6, 4, kLink),
               InvalidArgument);
  EXPECT_THROW(collective_s(LinkOp::kAllReduce, Algorithm::kRing, 1e6, 0, kLink), InvalidArgument);
  EXPECT_THROW(collective_s(LinkOp::kAllReduce, Algorithm::kRing, -1, 2, kLink), InvalidArgument);
}

TEST(CostModel, LinkFromFitInvertsTheFormula) {
  // A fit of a 2-rank all-reduce, 20 us + 1 ns/B, predicts the link, and the
  // link predicts the 2-rank operation back exactly.
  for (Algorithm a : {Algorithm::kRing, Algorithm::kTree, Algorithm::kHalvingDoubling}) {
    for (int n : {2, 3, 4}) {
      const LinkParams link = link_from_fit(LinkOp::kAllReduce, a, n, 2e-5, 1e-9);
      EXPECT_NEAR(collective_s(LinkOp::kAllReduce, a, 1e6, n, link), 2e-5 + 1e-3, 1e-12)
          << name_of(a) << " n=" << n;
    }
  }
  // Ring on 2 ranks: T = 2 alpha + S beta, so alpha = alpha_op / 2 and beta = beta_op.
  const LinkParams ring2 = link_from_fit(LinkOp::kAllReduce, Algorithm::kRing, 2, 2e-5, 1e-9);
  EXPECT_NEAR(ring2.alpha_s, 1e-5, 1e-15);
  EXPECT_NEAR(ring2.beta_s_per_byte, 1e-9, 1e-18);
  EXPECT_THROW(link_from_fit(LinkOp::kAllReduce, Algorithm::kRing, 1, 1e-5, 1e-9),
               InvalidArgument);
}

TEST(CostModel, LinkFromBandwidth) {
  const LinkParams l = LinkParams::from_bandwidth(10e9, 20e-6);
  EXPECT_DOUBLE_EQ(l.beta_s_per_byte, 8e-10);
  EXPECT_DOUBLE_EQ(l.alpha_s, 20e-6);
  EXPECT_THROW(LinkParams::from_bandwidth(0, 1e-6), InvalidArgument);
  EXPECT_EQ(ceil_log2(1), 0);
  EXPECT_EQ(ceil_log2(5), 3);
  EXPECT_EQ(ceil_log2(8), 3);
}

}  // namespace
}  // namespace tandem::sim
