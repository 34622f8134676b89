// FullyShardedDataParallel against DistributedDataParallel, the computation
// it must reproduce (DESIGN.md, "Correctness rule"): after 10 steps of SGD
// with Nesterov momentum and of AdamW, in float64, the parameters agree to
// rtol 1e-9 at 2, 3 and 4 ranks (3 ranks: shards of unequal length), on an
// MLP with one unit per Linear and on a GPT-mini with one unit per block.
// Then memory (1/N at rest, model state within 10% of the ZeRO-3 figure),
// prefetch, no_sync, unused parameters and bad options.
#include "tandem/parallel/fully_sharded_data_parallel.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "tandem/comm/backend.h"
#include "tandem/core/error.h"
#include "tandem/parallel/distributed_data_parallel.h"
#include "tandem/train/models/gpt_mini.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

constexpr int kSteps = 10;
constexpr int64_t kBatch = 4;

std::shared_ptr<Communicator> connect(int rank, int size, int port) {
  auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
  BackendOptions o{rank, size, with_prefix(store, "fsdp"), Millis(30'000),
                   "fsdp-test-" + std::to_string(port)};
  return make_shm_communicator(o);
}

// A model, how to compute its loss on rank r's micro-batch, and its units.
struct Case {
  std::function<std::shared_ptr<torch::nn::Module>()> make;
  std::function<at::Tensor(torch::nn::Module&, int rank, int step, int micro, int micros)> loss;
  FsdpWrapPolicy policy;
};

// 70, 110 and 33 parameters: unequal shards at 3 and 4 ranks.
Case mlp_case() {
  Case c;
  c.make = [] {
    at::manual_seed(0);
    torch::nn::Sequential m(torch::nn::Linear(6, 10), torch::nn::Tanh(), torch::nn::Linear(10, 10),
                            torch::nn::Tanh(), torch::nn::Linear(10, 3));
    m->to(at::kDouble);
    return m.ptr();
  };
  c.loss = [](torch::nn::Module& m, int rank, int step, int micro, int micros) {
    at::manual_seed(1000 + step * 97 + rank * 13 + micro * 7);
    at::Tensor x = at::randn({kBatch, 6}, at::kDouble);
    at::Tensor y = at::randn({kBatch, 3}, at::kDouble);
    auto& seq = dynamic_cast<torch::nn::SequentialImpl&>(m);
    return torch::nn::functional::mse_loss(seq.forward(x), y) / micros;
  };
  c.policy.module_types = {"LinearImpl"};
  return c;
}

train::GptMiniOptions small_gpt() {
  train::GptMiniOptions o;
  o.vocab = 61;
  o.context = 16;
  o.layers = 2;
  o.width = 32;
  o.heads = 2;
  return o;
}

Case gpt_case(train::GptMiniOptions options, at::ScalarType dtype) {
  Case c;
  c.make = [=] {
    at::manual_seed(0);
    auto m = std::make_shared<train::GptMiniImpl>(options);
    m->to(dtype);
    return std::static_pointer_cast<torch::nn::Module>(m);
  };
  c.loss = [=](torch::nn::Module& m, int rank, int step, int micro, int micros) {
    at::manual_seed(2000 + step * 97 + rank * 13 + micro * 7);
    at::Tensor tokens = at::randint(options.vocab, {2, 8}, at::kLong);
    at::Tensor targets = at::randint(options.vocab, {2, 8}, at::kLong);
    at::Tensor logits = dynamic_cast<train::GptMiniImpl&>(m).forward(tokens);
    return torch::nn::functional::cross_entropy(logits.reshape({-1, options.vocab}),
                                                targets.reshape({-1})) /
           micros;
  };
  c.policy.module_types = {"GptBlockImpl"};
  return c;
}

enum class Opt { kSgd, kAdamW };

std::unique_ptr<torch::optim::Optimizer> make_optimizer(Opt opt, std::vector<at::Tensor> params) {
  if (opt == Opt::kSgd) {
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true).weight_decay(1e-3));
  }
  return std::make_unique<torch::optim::AdamW>(params,
                                               torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
}

using State = torch::OrderedDict<std::string, at::Tensor>;

// DDP, each step on `micros` micro-batches concatenated into one loss.
State train_ddp(const Case& c, Opt opt, const std::shared_ptr<Communicator>& comm, int micros = 1) {
  auto model = c.make();
  DistributedDataParallel ddp(model, comm);
  auto optimizer = make_optimizer(opt, model->parameters());
  for (int s = 0; s < kSteps; ++s) {
    optimizer->zero_grad();
    at::Tensor loss = c.loss(*model, comm->rank(), s, 0, micros);
    for (int m = 1; m < micros; ++m) loss = loss + c.loss(*model, comm->rank(), s, m, micros);
    loss.backward();
    optimizer->step();
  }
  State out;
  for (const auto& item : model->named_parameters()) out.insert(item.key(), item.value().detach());
  return out;
}

// FSDP, each step over `micros` micro-batches with no_sync on all but the last.
State train_fsdp(const Case& c, Opt opt, const std::shared_ptr<Communicator>& comm,
                 FsdpOptions options, int micros = 1) {
  auto model = c.make();
  options.wrap = c.policy;
  FullyShardedDataParallel fsdp(model, comm, options);
  EXPECT_GE(fsdp.units().size(), 3u);
  auto optimizer = make_optimizer(opt, fsdp.parameters());
  for (int s = 0; s < kSteps; ++s) {
    optimizer->zero_grad();
    for (int m = 0; m < micros; ++m) {
      at::Tensor loss = c.loss(*model, comm->rank(), s, m, micros);
      if (m + 1 < micros) {
        auto guard = fsdp.no_sync();
        loss.backward();
      } else {
        loss.backward();
      }
    }
    optimizer->step();
  }
  return fsdp.full_state_dict();
}

void expect_same(const State& ddp, const State& fsdp, const char* what) {
  ASSERT_EQ(ddp.size(), fsdp.size()) << what;
  for (const auto& item : ddp) {
    const at::Tensor* other = fsdp.find(item.key());
    ASSERT_NE(other, nullptr) << what << ": no " << item.key();
    EXPECT_TRUE(at::allclose(item.value(), *other, 1e-9, 1e-12))
        << what << ": " << item.key() << " differs by "
        << (item.value() - *other).abs().max().item<double>();
  }
}

void run_equivalence(int world, const Case& c) {
  testing::MultiprocOptions mp;
  mp.timeout = std::chrono::milliseconds(150'000);
  testing::expect_ranks_succeed(
      world,
      [&](int rank, int size, int port) {
        auto comm = connect(rank, size, port);
        for (Opt opt : {Opt::kSgd, Opt::kAdamW}) {
          const char* what = opt == Opt::kSgd ? "SGD" : "AdamW";
          State ddp = train_ddp(c, opt, comm);
          State fsdp = train_fsdp(c, opt, comm, {});
          expect_same(ddp, fsdp, what);
          // The parameters moved, so the comparison is not between two copies of the start.
          State start = c.make()->named_parameters();
          EXPECT_FALSE(at::allclose(start.begin()->value(), ddp.begin()->value())) << what;
        }
      },
      mp);
}

class FsdpEquivalence : public ::testing::TestWithParam<int> {};

TEST_P(FsdpEquivalence, MlpWithOneUnitPerLinearMatchesDdp) {
  run_equivalence(GetParam(), mlp_case());
}

TEST_P(FsdpEquivalence, GptMiniWithOneUnitPerBlockMatchesDdp) {
  run_equivalence(GetParam(), gpt_case(small_gpt(), at::kDouble));
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, FsdpEquivalence, ::testing::Values(1, 2, 3, 4));

TEST(FullyShardedDataParallel, NoSyncOverTwoMicroBatchesEqualsOneBigBatch) {
  testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    Case c = mlp_case();
    State ddp = train_ddp(c, Opt::kSgd, comm, /*micros=*/2);
    State fsdp = train_fsdp(c, Opt::kSgd, comm, {}, /*micros=*/2);
    expect_same(ddp, fsdp, "no_sync");
  });
}

TEST(FullyShardedDataParallel, PrefetchedAllGathersAreUnderWayWhenTheirUnitIsTouched) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    Case c = mlp_case();
    for (bool prefetch : {true, false}) {
      auto model = c.make();
      FsdpOptions options;
      options.wrap = c.policy;
      options.prefetch = prefetch;
      options.trace = std::make_shared<TraceRecorder>(rank);
      FullyShardedDataParallel fsdp(model, comm, options);
      ASSERT_EQ(fsdp.units().size(), 3u);
      for (int s = 0; s < 3; ++s) {
        c.loss(*model, rank, s, 0, 1).backward();
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

TEST(FullyShardedDataParallel, ClipGradNormSeesTheWholeGradient) {
  testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    Case c = mlp_case();
    auto reference = c.make();
    DistributedDataParallel ddp(reference, comm);
    c.loss(*reference, rank, 0, 0, 1).backward();
    double sum = 0;
    for (const auto& p : reference->parameters()) sum += p.grad().pow(2).sum().item<double>();
    const double norm = std::sqrt(sum);
    auto model = c.make();
    FsdpOptions options;
    options.wrap = c.policy;
    FullyShardedDataParallel fsdp(model, comm, options);
    c.loss(*model, rank, 0, 0, 1).backward();
    EXPECT_NEAR(fsdp.clip_grad_norm(norm / 2), norm, 1e-12 * norm);
    at::Tensor after = at::zeros({1}, at::kDouble);
    for (const auto& shard : fsdp.parameters()) after += shard.grad().pow(2).sum();
    comm->all_reduce(after);
    EXPECT_NEAR(std::sqrt(after.item<double>()), norm / 2, 1e-5 * norm);
    EXPECT_THROW(fsdp.clip_grad_norm(0), InvalidArgument);
  });
}

// A rank that dies leaves the others' gathers failing inside an operator,
// where nothing can be thrown: forward runs on NaN and backward throws.
TEST(FullyShardedDataParallel, APeerLostDuringForwardIsThrownByBackward) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    Case c = mlp_case();
    auto model = c.make();
    FsdpOptions options;
    options.wrap = c.policy;
    options.timeout = Millis(5'000);
    FullyShardedDataParallel fsdp(model, comm, options);
    if (rank == 1) _exit(0);
    const auto start = std::chrono::steady_clock::now();
    at::Tensor loss = c.loss(*model, rank, 0, 0, 1);
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

struct TwoHeads : torch::nn::Module {
  TwoHeads() {
    at::manual_seed(0);
    used = register_module("used", torch::nn::Linear(6, 3));
    unused = register_module("unused", torch::nn::Linear(6, 3));
    to(at::kDouble);
  }
  at::Tensor forward(const at::Tensor& x) { return used->forward(x); }
  torch::nn::Linear used{nullptr};
  torch::nn::Linear unused{nullptr};
};

at::Tensor two_heads_loss(TwoHeads& m, int rank) {
  at::manual_seed(3000 + rank);
  return torch::nn::functional::mse_loss(m.forward(at::randn({kBatch, 6}, at::kDouble)),
                                         at::randn({kBatch, 3}, at::kDouble));
}

TEST(FullyShardedDataParallel, UnusedParametersAreAnErrorOrZeros) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    FsdpOptions options;
    options.wrap.module_names = {"used", "unused"};
    {
      auto model = std::make_shared<TwoHeads>();
      FullyShardedDataParallel fsdp(model, comm, options);
      try {
        two_heads_loss(*model, rank).backward();
        ADD_FAILURE() << "a backward that left parameters without gradients passed";
      } catch (const std::exception& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find("unused.weight, unused.bias got no gradient"), std::string::npos) << msg;
        EXPECT_NE(msg.find("find_unused_parameters"), std::string::npos) << msg;
      }
    }
    options.find_unused_parameters = true;
    auto model = std::make_shared<TwoHeads>();
    FullyShardedDataParallel fsdp(model, comm, options);
    ASSERT_EQ(fsdp.units().size(), 2u);
    ASSERT_EQ(fsdp.units()[1].module, "unused");
    two_heads_loss(*model, rank).backward();
    at::Tensor unused_grad = fsdp.shard(1).grad();
    ASSERT_TRUE(unused_grad.defined());
    EXPECT_EQ(unused_grad.abs().sum().item<double>(), 0.0);
    // The used head's gradient is the average over both ranks.
    at::Tensor mine = fsdp.shard(0).grad().clone();
    EXPECT_GT(mine.abs().sum().item<double>(), 0.0);
    auto reference = std::make_shared<TwoHeads>();
    std::vector<at::Tensor> grads;
    for (int r = 0; r < size; ++r) {
      reference->zero_grad();
      two_heads_loss(*reference, r).backward();
      grads.push_back(at::cat({reference->used->weight.grad().reshape({-1}),
                               reference->used->bias.grad().reshape({-1})}));
    }
    at::Tensor average = (grads[0] + grads[1]) / 2;
    const ShardRange range = fsdp.units()[0].shard;
    EXPECT_TRUE(at::allclose(mine, average.narrow(0, range.offset, range.numel), 1e-12, 1e-14));
  });
}

TEST(FullyShardedDataParallel, FullStateDictRoundTripsThroughLoad) {
  testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    Case c = gpt_case(small_gpt(), at::kDouble);
    FsdpOptions options;
    options.wrap = c.policy;
    auto trained = c.make();
    FullyShardedDataParallel a(trained, comm, options);
    torch::optim::SGD sgd(a.parameters(), torch::optim::SGDOptions(0.1));
    c.loss(*trained, rank, 0, 0, 1).backward();
    sgd.step();
    State state = a.full_state_dict();
    EXPECT_EQ(state.size(), trained->named_parameters().size());
    auto fresh = c.make();
    FullyShardedDataParallel b(fresh, comm, options);
    b.load_full_state_dict(state);
    State loaded = b.full_state_dict();
    expect_same(state, loaded, "loaded");
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
    at::Tensor la = c.loss(*trained, rank, 5, 0, 1);
    b.load_full_state_dict(state);
    at::Tensor lb = c.loss(*fresh, rank, 5, 0, 1);
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
        FullyShardedDataParallel fsdp(mlp_case().make(), comm, options);
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
    auto tied = mlp_case().make();
    auto& seq = dynamic_cast<torch::nn::SequentialImpl&>(*tied);
    seq[2]->register_parameter("shared", seq[0]->named_parameters()["weight"]);
    EXPECT_THROW(FullyShardedDataParallel(tied, comm), NotSupported);
  });
}

// fp32 GPT-mini with 32 small blocks and AdamW. The ZeRO-3 model state per
// rank is 16/N bytes per parameter (4 parameter, 4 gradient, 8 AdamW) plus
// the largest unit's gathered parameters and gradients (8 bytes per
// element). What FSDP may hold on top, and the test bounds to the byte: a
// second gathered unit (the prefetch), a second unit's full gradients (the
// reduce-scatter in flight while the next unit accumulates) and the root
// unit's full gradients (its embeddings get theirs last).
// `overlap` turns on both prefetch and reduce-scatter overlap; without, FSDP
// holds one unit's full parameters and one unit's full gradients at a time.
void run_memory(int world, bool overlap) {
  const bool prefetch = overlap;
  testing::expect_ranks_succeed(world, [=](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    train::GptMiniOptions o;
    o.vocab = 64;
    o.context = 32;
    o.layers = 32;
    o.width = 32;
    o.heads = 2;
    Case c = gpt_case(o, at::kFloat);
    auto model = c.make();
    FsdpOptions options;
    options.wrap = c.policy;
    options.prefetch = prefetch;
    options.overlap_reduce_scatter = overlap;
    FullyShardedDataParallel fsdp(model, comm, options);
    ASSERT_EQ(fsdp.units().size(), 33u);
    int64_t total = 0, largest = 0, mine = 0, root = 0;
    for (const auto& unit : fsdp.units()) {
      total += unit.layout.numel;
      largest = std::max(largest, unit.layout.numel);
      mine += unit.shard.numel;
      if (unit.module.empty()) root = unit.layout.numel;
    }
    // At rest: this rank's shards only, about 1/N of the parameter bytes.
    EXPECT_EQ(fsdp.memory().now().parameters, mine * 4);
    EXPECT_NEAR(static_cast<double>(mine), static_cast<double>(total) / size, 33.0);
    EXPECT_EQ(fsdp.memory().now().gradients, 0);
    torch::optim::AdamW adamw(fsdp.parameters(), torch::optim::AdamWOptions(1e-3));
    fsdp.account_optimizer(&adamw);
    for (int s = 0; s < 3; ++s) {
      if (s == 1) fsdp.reset_peak_memory();  // from here on the optimizer state exists
      adamw.zero_grad();
      c.loss(*model, rank, s, 0, 1).backward();
      adamw.step();
      // During forward and backward: the unit in use, and the next one when prefetching.
      const auto& stats = fsdp.last_stats();
      EXPECT_EQ(stats.max_gathered_units, prefetch && s > 0 ? 2 : 1) << "step " << s;
      EXPECT_LE(stats.max_gathered_bytes, stats.max_gathered_units * largest * 4);
    }
    const double theory = 16.0 * total / size + 8.0 * largest;
    const auto& peak = fsdp.memory().peak();
    const double measured = static_cast<double>(fsdp.memory().peak_total());
    std::printf(
        "rank %d of %d, overlap %d: %lld parameters, largest unit %lld; peak model state "
        "%.0f bytes, theory %.0f (%+.1f%%); peak parameters %lld, gradients %lld, "
        "optimizer %lld\n",
        rank, size, int(overlap), static_cast<long long>(total), static_cast<long long>(largest),
        measured, theory, 100.0 * (measured - theory) / theory,
        static_cast<long long>(peak.parameters), static_cast<long long>(peak.gradients),
        static_cast<long long>(peak.optimizer_state));
    EXPECT_NEAR(measured, theory, 0.10 * theory);
    EXPECT_LE(peak.parameters, (mine + (prefetch ? 2 : 1) * largest) * 4);
    // Shard gradients, and two units' full gradients (one without overlap)
    // plus the root's.
    EXPECT_LE(peak.gradients, (mine + (overlap ? 2 : 1) * largest + root) * 4);
    EXPECT_EQ(peak.optimizer_state, mine * 8);
    // After the step: nothing gathered, no full gradient held.
    EXPECT_EQ(fsdp.memory().now().parameters, mine * 4);
    EXPECT_EQ(fsdp.memory().now().gradients, mine * 4);
  });
}

TEST(FullyShardedDataParallel, ModelStateIsAboutSixteenOverNBytesPerParameter) {
  for (int world : {2, 4}) {
    run_memory(world, /*overlap=*/true);
    run_memory(world, /*overlap=*/false);
  }
}

}  // namespace
}  // namespace tandem::parallel
