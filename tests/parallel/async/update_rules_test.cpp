// The asynchronous strategies' update rules against hand-computed cases.
#include "tandem/parallel/async/update_rules.h"

#include <ATen/ops/empty_like.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>
#include <torch/optim/sgd.h>

#include <set>

#include "tandem/core/error.h"

namespace tandem::parallel {
namespace {

at::Tensor vec(std::vector<double> v) { return at::tensor(v, at::kDouble); }

TEST(UpdateRules, ElasticMoveIsAlphaTimesTheDifference) {
  const at::Tensor x = vec({1, 2}), c = vec({0, 4});
  at::Tensor move = at::empty_like(x);
  elastic_move(x, c, 0.5, move);
  EXPECT_DOUBLE_EQ(move[0].item<double>(), 0.5);
  EXPECT_DOUBLE_EQ(move[1].item<double>(), -1.0);
  // The worker and the center meet halfway at alpha 0.5; their sum is kept.
  EXPECT_TRUE(x.sub(move).equal(c.add(move)));
  EXPECT_THROW(elastic_move(x, c, 0.0, move), InvalidArgument);
  EXPECT_THROW(elastic_move(x, c, 1.5, move), InvalidArgument);
}

TEST(UpdateRules, PushSumMergeIsTheWeightedMean) {
  std::vector<at::Tensor> params = {vec({2}), vec({10, 0})};
  // theirs: [4 | 2, 8] with weight 3 against ours of weight 1.
  const double w = push_sum_merge(params, 1.0, vec({4, 2, 8}), 3.0);
  EXPECT_DOUBLE_EQ(w, 4.0);
  EXPECT_DOUBLE_EQ(params[0][0].item<double>(), (1 * 2 + 3 * 4) / 4.0);
  EXPECT_DOUBLE_EQ(params[1][0].item<double>(), (1 * 10 + 3 * 2) / 4.0);
  EXPECT_DOUBLE_EQ(params[1][1].item<double>(), (1 * 0 + 3 * 8) / 4.0);
}

TEST(UpdateRules, GossipPeersPickOnlyOpenRanksAndRepeat) {
  GossipPeers a(7, 1), b(7, 1);
  const std::vector<bool> closed = {false, true, false, true};
  std::set<int> seen;
  for (int i = 0; i < 50; ++i) {
    const int p = a.pick(closed);
    EXPECT_EQ(p, b.pick(closed));  // the same seed and rank, the same choices
    ASSERT_TRUE(p == 0 || p == 2) << p;
    seen.insert(p);
  }
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_EQ(a.pick({true, true}), -1);
}

TEST(UpdateRules, ServerStepAppliesTheGradientAtTheGivenRate) {
  at::Tensor shard = vec({1, -1});
  torch::optim::SGD opt({shard}, torch::optim::SGDOptions(1.0));
  server_step(opt, shard, vec({2, 4}), 0.1, [](torch::optim::Optimizer& o, double lr) {
    for (auto& g : o.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
  });
  EXPECT_DOUBLE_EQ(shard[0].item<double>(), 1 - 0.1 * 2);
  EXPECT_DOUBLE_EQ(shard[1].item<double>(), -1 - 0.1 * 4);
}

}  // namespace
}  // namespace tandem::parallel
