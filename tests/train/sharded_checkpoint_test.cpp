#include "tandem/train/sharded_checkpoint.h"

#include <ATen/Context.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <torch/serialize.h>

#include <filesystem>

#include "tandem/comm/backend.h"
#include "tandem/comm/store.h"
#include "tandem/core/error.h"
#include "tests/support/multiproc.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::expect_error;
using testing::TempDir;

torch::nn::Sequential make_model() {
  at::manual_seed(3);
  torch::nn::Sequential m(torch::nn::Linear(5, 7), torch::nn::BatchNorm1d(7),
                          torch::nn::Linear(7, 3));
  m->to(at::kDouble);
  at::NoGradGuard no_grad;
  int k = 0;
  for (auto& b : m->buffers()) b.fill_(0.5 + k++);
  return m;
}

// Two groups, as a sharded strategy would hold them: the last Linear, then
// the rest. Group tensors are the parameters in registration order.
struct Groups {
  std::vector<std::vector<std::string>> names;
  std::vector<std::vector<at::Tensor>> tensors;
};

Groups groups_of(torch::nn::Sequential& m) {
  auto named = m->named_parameters();
  Groups g;
  g.names = {{"2.weight", "2.bias"}, {"0.weight", "0.bias", "1.weight", "1.bias"}};
  for (const auto& names : g.names) {
    g.tensors.emplace_back();
    for (const auto& n : names) g.tensors.back().push_back(named[n].detach());
  }
  return g;
}

// Rank r's share at world size `world`: parameter slices, "exp_avg" = 2 x
// parameters, and a step counter of 5.
ShardedState state_of(torch::nn::Sequential& m, int rank, int world) {
  Groups g = groups_of(m);
  ShardedState s;
  for (size_t i = 0; i < g.names.size(); ++i) {
    std::vector<size_t> order(g.tensors[i].size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    ShardGroup grp;
    grp.layout = parallel::make_flat_layout(g.tensors[i], order);
    grp.names = g.names[i];
    ShardRange r = shard_range(grp.layout.numel, world, rank);
    grp.params = at::empty({r.numel}, at::kDouble);
    parallel::copy_range_out(grp.layout, g.tensors[i], r, grp.params);
    grp.optimizer = {{"exp_avg", grp.params * 2}, {"step", at::full({1}, 5, at::kLong)}};
    s.groups.push_back(std::move(grp));
  }
  return s;
}

Checkpoint base_of(torch::nn::Sequential& m) {
  Checkpoint b;
  b.step = 12;
  b.epoch = 1;
  b.samples_in_epoch = 24;
  b.seed = 9;
  b.meta = {{"strategy", "zero3"}};
  for (const auto& item : m->named_buffers()) b.buffers.emplace_back(item.key(), item.value());
  return b;
}

// Four ranks write their shards of the same model into dir.
void write_at_four(const std::string& dir) {
  tandem::testing::expect_ranks_succeed(4, [&](int rank, int size, int port) {
    auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
    auto comm = make_shm_communicator(
        {rank, size, store, Millis(30'000), "sharded-ckpt-" + std::to_string(port)});
    auto m = make_model();
    write_sharded_checkpoint(dir, base_of(m), state_of(m, rank, size), *comm);
  });
}

TEST(ShardedCheckpoint, WrittenAtFourReadsAtOneTwoThreeAndFour) {
  TempDir dir;
  write_at_four(dir.path().string());
  const std::string step_dir = latest_checkpoint(dir.path().string());
  EXPECT_EQ(std::filesystem::path(step_dir).filename(), "step-12");
  ASSERT_TRUE(is_sharded_checkpoint(step_dir));
  auto m = make_model();
  for (int world : {1, 2, 3, 4}) {
    for (int rank = 0; rank < world; ++rank) {
      LoadedShards got = read_sharded_checkpoint(step_dir, rank, world);
      ShardedState want = state_of(m, rank, world);
      EXPECT_EQ(got.saved_world_size, 4);
      EXPECT_EQ(got.base.step, 12);
      EXPECT_EQ(got.base.samples_in_epoch, 24);
      EXPECT_EQ(got.base.meta.at("strategy"), "zero3");
      ASSERT_EQ(got.base.buffers.size(), 3u);
      check_same_layout(got, want, step_dir);
      ASSERT_EQ(got.state.groups.size(), 2u);
      for (size_t g = 0; g < 2; ++g) {
        const auto& a = got.state.groups[g];
        EXPECT_TRUE(at::equal(a.params, want.groups[g].params)) << world << "/" << rank << " " << g;
        ASSERT_EQ(a.optimizer.size(), 2u);
        EXPECT_EQ(a.optimizer[0].first, "exp_avg");
        EXPECT_TRUE(at::equal(a.optimizer[0].second, want.groups[g].params * 2));
        EXPECT_EQ(a.optimizer[1].first, "step");
        EXPECT_EQ(a.optimizer[1].second.item<int64_t>(), 5);
      }
    }
  }
}

TEST(ShardedCheckpoint, ConsolidatedFileLoadsIntoAPlainModel) {
  TempDir dir;
  write_at_four(dir.path().string());
  const std::string out = dir.file("full.pt");
  consolidate_checkpoint(latest_checkpoint(dir.path().string()), out);
  auto want = make_model();
  at::manual_seed(99);  // a different initialisation, then plain LibTorch loading
  torch::nn::Sequential plain(torch::nn::Linear(5, 7), torch::nn::BatchNorm1d(7),
                              torch::nn::Linear(7, 3));
  plain->to(at::kDouble);
  torch::load(plain, out);
  auto a = plain->named_parameters();
  for (const auto& item : want->named_parameters())
    EXPECT_TRUE(at::equal(a[item.key()], item.value())) << item.key();
  auto b = plain->named_buffers();
  for (const auto& item : want->named_buffers())
    EXPECT_TRUE(at::equal(b[item.key()], item.value())) << item.key();
}

TEST(ShardedCheckpoint, MissingOrCorruptShardIsNamed) {
  TempDir dir;
  write_at_four(dir.path().string());
  const std::string step_dir = latest_checkpoint(dir.path().string());
  const std::string rank2 = (std::filesystem::path(step_dir) / "rank-2.ckpt").string();
  auto bytes = testing::read_all(rank2);
  auto bad = bytes;
  bad[bad.size() - 3] ^= 0x5a;
  testing::write_all(rank2, bad);
  expect_error<CheckpointError>([&] { read_sharded_checkpoint(step_dir, 0, 2); },
                                {"rank-2.ckpt", "checksum"});
  std::filesystem::remove(rank2);
  expect_error<CheckpointError>([&] { read_sharded_checkpoint(step_dir, 1, 3); },
                                {"rank-2.ckpt", "missing", "rank 2"});
  expect_error<CheckpointError>([&] { consolidate_checkpoint(step_dir, dir.file("x.pt")); },
                                {"rank-2.ckpt"});
}

TEST(ShardedCheckpoint, LayoutMismatchNamesTheParameter) {
  TempDir dir;
  write_at_four(dir.path().string());
  const std::string step_dir = latest_checkpoint(dir.path().string());
  LoadedShards got = read_sharded_checkpoint(step_dir, 0, 2);
  auto m = make_model();
  ShardedState other = state_of(m, 0, 2);
  other.groups[1].names[2] = "1.gamma";
  expect_error<CheckpointError>([&] { check_same_layout(got, other, step_dir); },
                                {"1.gamma", "1.weight"});
  other.groups.pop_back();
  expect_error<CheckpointError>([&] { check_same_layout(got, other, step_dir); },
                                {"2 flat groups"});
}

template <typename Opt, typename Options>
void expect_state_round_trip(Options options) {
  at::manual_seed(5);
  at::Tensor w = at::randn({10}, at::kDouble).set_requires_grad(true);
  at::Tensor v = w.detach().clone().set_requires_grad(true);
  Opt a({w}, options);
  Opt b({v}, options);
  EXPECT_TRUE(optimizer_state_of(a, w).empty());
  for (int s = 0; s < 3; ++s) {
    w.mutable_grad() = at::arange(10, at::kDouble) * (s + 1);
    a.step();
  }
  {
    at::NoGradGuard no_grad;
    v.copy_(w);
  }
  set_optimizer_state(b, v, optimizer_state_of(a, w));
  at::Tensor g = at::randn({10}, at::kDouble);
  w.mutable_grad() = g;
  v.mutable_grad() = g.clone();
  a.step();
  b.step();
  EXPECT_TRUE(at::equal(w, v));
}

TEST(ShardedCheckpoint, OptimizerStateRoundTrips) {
  expect_state_round_trip<torch::optim::SGD>(
      torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true));
  expect_state_round_trip<torch::optim::AdamW>(torch::optim::AdamWOptions(0.01));
  at::Tensor w = at::zeros({4}, at::kDouble).set_requires_grad(true);
  torch::optim::AdamW opt({w}, torch::optim::AdamWOptions(0.01));
  expect_error<CheckpointError>(
      [&] { set_optimizer_state(opt, w, {{"momentum_buffer", at::zeros({4}, at::kDouble)}}); },
      {"step", "missing", "--optimizer"});
}

// A shard stepped as pieces saves the fields of the whole shard, and loads
// into another cut of the same shard: the format does not depend on the cut.
TEST(ShardedCheckpoint, PiecesOfAShardSaveAsOneAndLoadIntoAnotherCut) {
  at::manual_seed(6);
  at::Tensor flat = at::randn({10}, at::kDouble);
  at::Tensor grad = at::randn({10}, at::kDouble);
  auto cut = [](const at::Tensor& t, std::vector<int64_t> sizes) {
    std::vector<at::Tensor> pieces;
    int64_t off = 0;
    for (int64_t n : sizes) {
      pieces.push_back(t.narrow(0, off, n).clone().set_requires_grad(true));
      off += n;
    }
    return pieces;
  };
  std::vector<at::Tensor> three = cut(flat, {4, 4, 2});
  std::vector<at::Tensor> two = cut(flat, {7, 3});
  torch::optim::AdamW a(three, torch::optim::AdamWOptions(0.01));
  torch::optim::AdamW b(two, torch::optim::AdamWOptions(0.01));
  EXPECT_TRUE(optimizer_state_of(a, three).empty());
  auto set_grads = [&](std::vector<at::Tensor>& pieces, const at::Tensor& g) {
    int64_t off = 0;
    for (auto& p : pieces) {
      p.mutable_grad() = g.narrow(0, off, p.numel()).clone();
      off += p.numel();
    }
  };
  set_grads(three, grad);
  a.step();
  auto fields = optimizer_state_of(a, three);
  ASSERT_EQ(fields.size(), 3u);  // exp_avg, exp_avg_sq, step
  for (const auto& [name, t] : fields) {
    if (name != "step") {
      EXPECT_EQ(t.numel(), 10) << name;
    }
  }
  at::Tensor whole = at::cat({three[0], three[1], three[2]}).detach();
  {
    at::NoGradGuard no_grad;
    two[0].copy_(whole.narrow(0, 0, 7));
    two[1].copy_(whole.narrow(0, 7, 3));
  }
  set_optimizer_state(b, two, fields);
  at::Tensor g2 = at::randn({10}, at::kDouble);
  set_grads(three, g2);
  set_grads(two, g2);
  a.step();
  b.step();
  EXPECT_TRUE(at::equal(at::cat({three[0], three[1], three[2]}), at::cat({two[0], two[1]})));
  expect_error<CheckpointError>(
      [&] { set_optimizer_state(b, std::vector<at::Tensor>{two[0]}, fields); },
      {"exp_avg", "10 elements", "has 7"});
}

}  // namespace
}  // namespace tandem::train
