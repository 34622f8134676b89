// FullyShardedDataParallel's behaviour beyond equivalence
// (fsdp_equivalence_test.cpp) and memory (fsdp_memory_test.cpp): prefetch,
// a peer lost during forward, unused parameters, full and sharded state,
// and bad options.
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>
#include <unistd.h>

#include <cmath>

#include "tandem/core/error.h"
#include "tests/parallel/fsdp/fsdp_cases.h"
#include "tests/parallel/support/equivalence.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

std::shared_ptr<Communicator> connect(int rank, int size, int port) {
  return testing::connect(testing::Backend::kShm, rank, size, port, "fsdp");
}

using State = torch::OrderedDict<std::string, at::Tensor>;

using Case = FsdpCase;

TEST(FullyShardedDataParallel, PrefetchedAllGathersAreUnderWayWhenTheirUnitIsTouched) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    Case c = mlp_case();
    for (bool prefetch : {true, false}) {
      auto model = c.workload.make();
      FsdpOptions options;
      options.wrap = c.policy;
      options.prefetch = prefetch;
      options.trace = std::make_shared<TraceRecorder>(rank);
      FullyShardedDataParallel fsdp(model, comm, options);
      ASSERT_EQ(fsdp.units().size(), 3u);
      for (int s = 0; s < 3; ++s) {
        testing::rank_loss(c.workload, *model, rank, s).backward();
        const auto& stats = fsdp.last_stats();
        // Touch order: forward 0, 1, 2; backward 2 (still gathered), 1; the
        // first Linear's weight is not needed in backward (the input needs
        // no gradient). Recorded in the first step; afterwards 1 and 2 are
        // prefetched, and 1 stays gathered through 2 since it comes next.
        const bool ahead = prefetch && s > 0;
        EXPECT_EQ(stats.all_gathers, ahead ? 3 : 4) << "step " << s << " prefetch " << prefetch;
        EXPECT_EQ(stats.reduce_scatters_during_backward, 3);
        EXPECT_EQ(stats.max_gathered_units, ahead ? 2 : 1);
        if (ahead) {
          EXPECT_EQ(stats.prefetched, 2) << "step " << s;
          EXPECT_EQ(stats.prefetch_hits, 2) << "step " << s;
        } else {
          EXPECT_EQ(stats.prefetched, 0) << "step " << s;
          EXPECT_EQ(stats.prefetch_hits, 0) << "step " << s;
        }
      }
      int gathers = 0, reduces = 0;
      for (const auto& e : options.trace->events()) {
        if (e.name.rfind("all_gather unit", 0) == 0 && e.lane == "comm") ++gathers;
        if (e.name.rfind("reduce_scatter unit", 0) == 0 && e.lane == "comm-grad") ++reduces;
      }
      EXPECT_EQ(gathers, prefetch ? 4 + 3 + 3 : 3 * 4);
      EXPECT_EQ(reduces, 3 * 3);
    }
  });
}

// A rank that dies leaves the others' gathers failing inside an operator,
// where nothing can be thrown: forward runs on NaN and backward throws.
TEST(FullyShardedDataParallel, APeerLostDuringForwardIsThrownByBackward) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    Case c = mlp_case();
    auto model = c.workload.make();
    FsdpOptions options;
    options.wrap = c.policy;
    options.timeout = Millis(5'000);
    FullyShardedDataParallel fsdp(model, comm, options);
    if (rank == 1) _exit(0);
    const auto start = std::chrono::steady_clock::now();
    at::Tensor loss = testing::rank_loss(c.workload, *model, rank, 0);
    EXPECT_TRUE(std::isnan(loss.item<double>()));
    try {
      loss.backward();
      ADD_FAILURE() << "backward passed without its peer";
    } catch (const PeerError& e) {
      EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
    } catch (const TimeoutError& e) {
      EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  });
}

TEST(FullyShardedDataParallel, UnusedParametersAreAnErrorOrZeros) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    const testing::Workload w = testing::two_heads_workload();
    FsdpOptions options;
    options.wrap.module_names = {"used", "unused"};
    {
      auto model = w.make();
      FullyShardedDataParallel fsdp(model, comm, options);
      testing::expect_unused_head_named([&] { testing::rank_loss(w, *model, rank, 0).backward(); });
    }
    options.find_unused_parameters = true;
    auto model = w.make();
    FullyShardedDataParallel fsdp(model, comm, options);
    ASSERT_EQ(fsdp.units().size(), 2u);
    ASSERT_EQ(fsdp.units()[1].module, "unused");
    testing::rank_loss(w, *model, rank, 0).backward();
    at::Tensor unused_grad = fsdp.shard(1).grad();
    ASSERT_TRUE(unused_grad.defined());
    EXPECT_EQ(unused_grad.abs().sum().item<double>(), 0.0);
    // The used head's gradient is that of one process on both ranks' batches.
    at::Tensor mine = fsdp.shard(0).grad().clone();
    EXPECT_GT(mine.abs().sum().item<double>(), 0.0);
    testing::TwoHeads reference;
    testing::one_process_loss(w, reference, size, 0).backward();
    at::Tensor average = at::cat({reference.used->weight.grad().reshape({-1}),
                                  reference.used->bias.grad().reshape({-1})});
    const ShardRange range = fsdp.units()[0].shard;
    EXPECT_TRUE(at::allclose(mine, average.narrow(0, range.offset, range.numel), 1e-12, 1e-14));
  });
}

TEST(FullyShardedDataParallel, FullStateDictRoundTripsThroughLoad) {
  testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    Case c = gpt_case();
    FsdpOptions options;
    options.wrap = c.policy;
    auto trained = c.workload.make();
    FullyShardedDataParallel a(trained, comm, options);
    torch::optim::SGD sgd(a.parameters(), torch::optim::SGDOptions(0.1));
    testing::rank_loss(c.workload, *trained, rank, 0).backward();
    sgd.step();
    State state = a.full_state_dict();
    EXPECT_EQ(state.size(), trained->named_parameters().size());
    auto fresh = c.workload.make();
    FullyShardedDataParallel b(fresh, comm, options);
    b.load_full_state_dict(state);
    State loaded = b.full_state_dict();
    testing::expect_same_parameters(loaded, state, 1e-9, 1e-12, "loaded");
    // Each rank holds its own part: the units' shards tile the flat vectors.
    for (size_t u = 0; u < b.units().size(); ++u) {
      const FsdpUnitInfo& info = b.units()[u];
      EXPECT_EQ(info.shard.offset, shard_range(info.layout.numel, size, rank).offset);
      EXPECT_EQ(b.shard(u).numel(), info.shard.numel);
      EXPECT_EQ(info.parameter_names.size(), info.layout.entries.size());
      b.load_shard(u, a.shard(u).detach() * 2);
    }
    State doubled = b.full_state_dict();
    for (const auto& item : state) {
      EXPECT_TRUE(at::allclose(doubled[item.key()], item.value() * 2)) << item.key();
    }
    // The module computes with the loaded parameters: same loss as the trained one.
    at::Tensor la = testing::rank_loss(c.workload, *trained, rank, 5);
    b.load_full_state_dict(state);
    at::Tensor lb = testing::rank_loss(c.workload, *fresh, rank, 5);
    EXPECT_NEAR(la.item<double>(), lb.item<double>(), 1e-12);
    a.reshard();
    b.reshard();
  });
}

TEST(FullyShardedDataParallel, BadOptionsAreNamed) {
  testing::expect_ranks_succeed(1, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto expect_invalid = [&](FsdpOptions options, std::vector<std::string> words) {
      try {
        FullyShardedDataParallel fsdp(mlp_case().workload.make(), comm, options);
        ADD_FAILURE() << "accepted: " << words[0];
      } catch (const InvalidArgument& e) {
        for (const auto& w : words) {
          EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
        }
      }
    };
    FsdpOptions o;
    o.timeout = Millis(0);
    expect_invalid(o, {"FsdpOptions::timeout", "positive"});
    o = {};
    o.wrap.module_types = {"LinearImpl"};
    o.wrap.min_num_params = 10;
    expect_invalid(o, {"set only one of", "min_num_params 10"});
    o = {};
    o.wrap.min_num_params = -1;
    expect_invalid(o, {"FsdpWrapPolicy::min_num_params", "-1"});
    o = {};
    o.wrap.module_types = {"ConvImpl"};
    expect_invalid(o, {"FsdpWrapPolicy::module_types", "'ConvImpl'", "torch::nn::LinearImpl"});
    o = {};
    o.wrap.module_names = {"7"};
    expect_invalid(o, {"FsdpWrapPolicy::module_names", "'7'", "0, 1, 2, 3, 4"});
    // A tied weight cannot be sharded twice.
    auto tied = mlp_case().workload.make();
    auto& seq = dynamic_cast<torch::nn::SequentialImpl&>(*tied);
    seq[2]->register_parameter("shared", seq[0]->named_parameters()["weight"]);
    EXPECT_THROW(FullyShardedDataParallel(tied, comm), NotSupported);
  });
}

}  // namespace
}  // namespace tandem::parallel
