// GossipMixer's defining property: mixing alone (no training, learning rate
// 0) keeps the push-sum weighted average of the workers' parameters (within
// 1e-6) while their consensus distance shrinks (below a fifth in 25
// rounds); for the push and the pull variant, at 2 and 4 workers.
#include "tandem/parallel/async/gossip.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <tuple>

#include "tandem/core/error.h"
#include "tandem/parallel/async/local_sgd.h"
#include "tests/parallel/async/async_test_support.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

using testing::connect;

// Two tensors of a different start on every rank.
std::vector<at::Tensor> start_parameters(int rank) {
  at::manual_seed(100 + rank);
  return {at::randn({7, 3}, at::kDouble), at::randn({5}, at::kDouble)};
}

// Sum over ranks of w * x, and of w, as one flat vector [w x..., w].
at::Tensor weighted_sums(Communicator& comm, const std::vector<at::Tensor>& params, double w) {
  at::Tensor flat =
      at::cat({params[0].reshape(-1) * w, params[1].reshape(-1) * w, at::tensor({w}, at::kDouble)});
  comm.all_reduce(flat);
  return flat;
}

using Case = std::tuple<int, GossipVariant>;
class GossipMixing : public ::testing::TestWithParam<Case> {};

TEST_P(GossipMixing, KeepsTheAverageWhileTheWorkersAgree) {
  const auto [world, variant] = GetParam();
  tandem::testing::expect_ranks_succeed(world, [variant = variant](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto params = start_parameters(rank);
    const at::Tensor before = weighted_sums(*comm, params, 1.0);
    const double spread_before = consensus_distance(*comm, params);
    GossipOptions o;
    o.variant = variant;
    o.seed = 3;
    GossipMixer mixer(comm, params, o);
    // The rounds are aligned so that every worker mixes as often, and each
    // round's pushes have arrived before the next round merges them; without
    // that a fast worker may finish its rounds before the others start, or a
    // push may wait a round in a loaded machine's socket, which the strategy
    // allows but this property does not measure.
    int64_t pushes_due = 0;
    for (int i = 0; i < 25; ++i) {
      mixer.mix();
      if (variant == GossipVariant::kPush) {
        at::Tensor to_each = at::zeros({size}, at::kLong);
        to_each[mixer.last_peer()] = 1;
        comm->all_reduce(to_each);
        pushes_due += to_each[rank].item<int64_t>();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (mixer.pushes_received() < pushes_due) {
          ASSERT_LT(std::chrono::steady_clock::now(), deadline)
              << "rank " << rank << ": " << mixer.pushes_received() << " of " << pushes_due
              << " pushes arrived in 30 s";
          std::this_thread::yield();
        }
      }
      comm->barrier();
    }
    mixer.finish();
    EXPECT_EQ(mixer.exchanges(), 25);
    const at::Tensor after = weighted_sums(*comm, params, mixer.weight());
    // The weights still sum to the number of workers, and the weighted
    // average is the starting average.
    EXPECT_NEAR(after[after.numel() - 1].item<double>(), size, 1e-12);
    const double drift =
        (after / after[after.numel() - 1] - before / size).abs().max().item<double>();
    EXPECT_LT(drift, 1e-6);
    const double spread_after = consensus_distance(*comm, params, mixer.weight());
    EXPECT_LT(spread_after, 0.2 * spread_before)
        << "consensus distance " << spread_before << " -> " << spread_after;
  });
}

INSTANTIATE_TEST_SUITE_P(Variants, GossipMixing,
                         ::testing::Combine(::testing::Values(2, 4),
                                            ::testing::Values(GossipVariant::kPush,
                                                              GossipVariant::kPull)),
                         [](const auto& info) {
                           return fmt::format(
                               "{}ranks_{}", std::get<0>(info.param),
                               std::get<1>(info.param) == GossipVariant::kPush ? "push" : "pull");
                         });

TEST(GossipMixer, NeedsTwoWorkers) {
  tandem::testing::expect_ranks_succeed(1, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    EXPECT_THROW(GossipMixer(comm, start_parameters(0), {}), InvalidArgument);
  });
}

}  // namespace
}  // namespace tandem::parallel
