#include "tandem/train/checkpoint.h"

#include <ATen/Context.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "tandem/comm/rendezvous.h"
#include "tandem/core/error.h"
#include "tandem/train/trainer.h"
#include "tests/support/multiproc.h"
#include "tests/support/rank_init.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::expect_error;
using testing::TempDir;

torch::nn::Sequential small_model(int64_t hidden = 8) {
  return torch::nn::Sequential(torch::nn::Linear(4, hidden), torch::nn::BatchNorm1d(hidden),
                               torch::nn::Linear(hidden, 3));
}

void sgd_step(torch::nn::Sequential& model, torch::optim::SGD& opt, const at::Tensor& x) {
  opt.zero_grad();
  model->forward(x).pow(2).sum().backward();
  opt.step();
}

torch::optim::SGD make_sgd(torch::nn::Sequential& model) {
  return torch::optim::SGD(model->parameters(),
                           torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true));
}

// Two SGD momentum steps on `model`, then a checkpoint of it.
Checkpoint train_small(torch::nn::Sequential& model, torch::optim::SGD& opt) {
  sgd_step(model, opt, at::randn({5, 4}));
  sgd_step(model, opt, at::randn({5, 4}));
  Checkpoint ck;
  ck.step = 2;
  ck.epoch = 1;
  ck.samples_in_epoch = 10;
  ck.seed = 7;
  ck.world_size = 2;
  ck.meta = {{"model", "small"}};
  capture_module(*model, ck);
  capture_optimizer(opt, ck);
  capture_rng(ck);
  return ck;
}

// A checkpoint of a small model after two SGD momentum steps, in `dir`.
std::string write_small(const std::string& dir) {
  at::manual_seed(1);
  auto model = small_model();
  auto opt = make_sgd(model);
  return write_checkpoint(dir, train_small(model, opt));
}

TEST(Checkpoint, RoundTripModelAndSgdMomentum) {
  TempDir dir;
  at::manual_seed(1);
  auto a = small_model();
  auto opt_a = make_sgd(a);
  Checkpoint ck = train_small(a, opt_a);
  const std::string path = write_checkpoint(dir.path().string(), ck);
  EXPECT_EQ(path, dir.file("step-2.ckpt"));
  EXPECT_FALSE(std::filesystem::exists(dir.file("step-2.tmp")));
  EXPECT_EQ(latest_checkpoint(dir.path().string()), path);

  Checkpoint back = load_latest(dir.path().string());
  EXPECT_EQ(back.path, path);
  EXPECT_EQ(back.step, 2);
  EXPECT_EQ(back.epoch, 1);
  EXPECT_EQ(back.samples_in_epoch, 10);
  EXPECT_EQ(back.seed, 7u);
  EXPECT_EQ(back.world_size, 2);
  EXPECT_EQ(back.meta, ck.meta);
  ASSERT_TRUE(back.rng_state.defined());
  EXPECT_TRUE(at::equal(back.rng_state, ck.rng_state));
  EXPECT_NO_THROW(check_world_size(back, 2));

  // A differently initialised model takes the state; one more step with the
  // same input gives bitwise the same result only if the momentum came back.
  at::manual_seed(99);
  auto b = small_model();
  auto opt_b = make_sgd(b);
  restore_module(back, *b);
  restore_optimizer(back, opt_b);
  restore_rng(back);
  at::Tensor x = at::randn({5, 4});
  sgd_step(a, opt_a, x);
  sgd_step(b, opt_b, x);
  auto pa = a->named_parameters();
  auto pb = b->named_parameters();
  for (const auto& item : pa) {
    EXPECT_TRUE(at::equal(item.value(), pb[item.key()])) << item.key();
  }
  auto ba = a->named_buffers();
  auto bb = b->named_buffers();
  for (const auto& item : ba) {
    EXPECT_TRUE(at::equal(item.value(), bb[item.key()])) << item.key();
  }
}

TEST(Checkpoint, StateDigestSeesOneUlpAndTheNames) {
  at::manual_seed(1);
  auto a = small_model();
  at::manual_seed(1);
  auto b = small_model();
  const uint64_t digest = state_digest(*a);
  EXPECT_EQ(state_digest(*b), digest);
  float* bias = b->ptr(2)->named_parameters()["bias"].data_ptr<float>();
  bias[1] = std::nextafter(bias[1], 1e9f);
  EXPECT_NE(state_digest(*b), digest);
  at::Tensor running_mean = a->ptr(1)->named_buffers()["running_mean"];
  running_mean.add_(1);
  EXPECT_NE(state_digest(*a), digest);
  running_mean.sub_(1);
  EXPECT_EQ(state_digest(*a), digest);
}

TEST(Checkpoint, CorruptPayloadByteNamesTheFileAndChecksum) {
  TempDir dir;
  const std::string path = write_small(dir.path().string());
  auto bytes = testing::read_all(path);
  bytes[bytes.size() - 3] ^= 0x40;
  testing::write_all(path, bytes);
  expect_error<CheckpointError>([&] { read_checkpoint(path); }, {path, "checksum"});
}

TEST(Checkpoint, CorruptHeaderByteIsCaught) {
  TempDir dir;
  const std::string path = write_small(dir.path().string());
  auto bytes = testing::read_all(path);
  bytes[40] ^= 0x01;
  testing::write_all(path, bytes);
  expect_error<CheckpointError>([&] { read_checkpoint(path); }, {path, "header_checksum"});
}

TEST(Checkpoint, TruncatedFileIsACheckpointError) {
  TempDir dir;
  const std::string path = write_small(dir.path().string());
  const auto size = std::filesystem::file_size(path);
  for (size_t keep : {size_t{0}, size_t{5}, size_t{20}, size_t{100}, size - 1}) {
    auto bytes = testing::read_all(path);
    bytes.resize(keep);
    const std::string cut = dir.file("cut.ckpt");
    testing::write_all(cut, bytes);
    expect_error<CheckpointError>([&] { read_checkpoint(cut); }, {cut, "truncated"});
  }
}

TEST(Checkpoint, WrongMagicAndVersion) {
  TempDir dir;
  const std::string path = write_small(dir.path().string());
  auto bytes = testing::read_all(path);
  auto bad = bytes;
  bad[0] = 'X';
  testing::write_all(path, bad);
  expect_error<CheckpointError>([&] { read_checkpoint(path); }, {path, "magic"});
  bad = bytes;
  bad[8] = 99;  // the format version's low byte
  testing::write_all(path, bad);
  expect_error<CheckpointError>([&] { read_checkpoint(path); }, {path, "version", "99"});
}

TEST(Checkpoint, MissingFilesAreCheckpointErrors) {
  TempDir dir;
  expect_error<CheckpointError>([&] { load_latest(dir.path().string()); }, {"latest"});
  expect_error<CheckpointError>([&] { read_checkpoint(dir.file("nope.ckpt")); }, {"nope.ckpt"});
}

TEST(Checkpoint, MismatchedModelNamesTheParameter) {
  TempDir dir;
  const std::string path = write_small(dir.path().string());
  Checkpoint ck = read_checkpoint(path);
  auto wider = small_model(16);
  expect_error<CheckpointError>([&] { restore_module(ck, *wider); },
                                {path, "parameter '0.weight'", "[8, 4]", "[16, 4]"});
  auto other = torch::nn::Sequential(torch::nn::Linear(4, 3));
  expect_error<CheckpointError>([&] { restore_module(ck, *other); }, {path, "parameter '"});
}

TEST(Checkpoint, OtherWorldSizeExplainsTheSamplerPosition) {
  TempDir dir;
  Checkpoint ck = read_checkpoint(write_small(dir.path().string()));
  expect_error<CheckpointError>([&] { check_world_size(ck, 4); },
                                {ck.path, "world_size", "2 ranks", "sampler", "resume with 2"});
}

// The Done-when resume test: 20 steps straight vs 10 steps, stop, resume for
// the remaining 10 give bitwise identical parameters and buffers. 200 samples
// in batches of 16 make an epoch of 12 steps, so the resumed run finishes
// epoch 0 from the middle and crosses into epoch 1; the cosine schedule with
// warmup checks that the step carried over; Nesterov momentum that the
// optimizer state did.
TrainerOptions resume_run_options(int64_t batch_size) {
  TrainerOptions o;
  o.model.kind = ModelKind::kMlp;
  o.data.source = "synthetic-mnist";
  o.data.synthetic_size = 200;
  o.run.steps = 20;
  o.run.batch_size = batch_size;
  o.optimizer.lr = 0.05;
  o.optimizer.momentum = 0.9;
  o.optimizer.nesterov = true;
  o.optimizer.warmup_steps = 3;
  o.optimizer.schedule = LrSchedule::kCosine;
  o.run.seed = 5;
  o.observe.eval_batches = 1;
  return o;
}

// Expects the two checkpoints to hold bitwise the same parameters and buffers.
void expect_same_state(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.parameters.size(), b.parameters.size());
  for (size_t i = 0; i < a.parameters.size(); ++i) {
    EXPECT_EQ(a.parameters[i].first, b.parameters[i].first);
    EXPECT_TRUE(at::equal(a.parameters[i].second, b.parameters[i].second)) << a.parameters[i].first;
  }
  ASSERT_EQ(a.buffers.size(), b.buffers.size());
  for (size_t i = 0; i < a.buffers.size(); ++i) {
    EXPECT_TRUE(at::equal(a.buffers[i].second, b.buffers[i].second)) << a.buffers[i].first;
  }
}

TEST(Checkpoint, ResumeGivesTheSameParametersAsAStraightRun) {
  auto comm = tandem::init(tandem::RendezvousInfo{}, {});
  TempDir straight_dir, resumed_dir;
  const TrainerOptions o = resume_run_options(16);

  TrainerOptions straight = o;
  straight.checkpoint.dir = straight_dir.path().string();
  const TrainSummary straight_summary = train(straight, comm, nullptr);
  EXPECT_EQ(straight_summary.steps, 20);

  TrainerOptions first = o;
  first.checkpoint.dir = resumed_dir.path().string();
  first.checkpoint.every = 4;
  first.run.stop_at_step = 10;
  EXPECT_EQ(train(first, comm, nullptr).steps, 10);
  EXPECT_EQ(latest_checkpoint(first.checkpoint.dir), resumed_dir.file("step-10.ckpt"));
  EXPECT_TRUE(std::filesystem::exists(resumed_dir.file("step-8.ckpt")));
  Checkpoint mid = load_latest(first.checkpoint.dir);
  EXPECT_EQ(mid.step, 10);
  EXPECT_EQ(mid.epoch, 0);
  EXPECT_EQ(mid.samples_in_epoch, 160);

  TrainerOptions second = o;
  second.checkpoint.dir = resumed_dir.path().string();
  second.checkpoint.resume = ResumeMode::kRequire;
  const TrainSummary resumed_summary = train(second, comm, nullptr);
  EXPECT_EQ(resumed_summary.steps, 10);
  EXPECT_EQ(resumed_summary.state_digest, straight_summary.state_digest);

  Checkpoint a = read_checkpoint(straight_dir.file("step-20.ckpt"));
  Checkpoint b = read_checkpoint(resumed_dir.file("step-20.ckpt"));
  EXPECT_EQ(b.epoch, 1);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.samples_in_epoch, b.samples_in_epoch);
  expect_same_state(a, b);

  // Resuming with another batch size would change the data order: refused.
  TrainerOptions other = second;
  other.run.batch_size = 8;
  expect_error<CheckpointError>([&] { train(other, comm, nullptr); },
                                {"step-20.ckpt", "global_batch", "--batch-size x ranks"});
}

// The loss each step of this rank saw, from a --metrics file logged every step.
std::map<int64_t, double> losses_by_step(const std::string& path) {
  std::map<int64_t, double> losses;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    losses[j["step"].get<int64_t>()] = j["loss"].get<double>();
  }
  return losses;
}

// The resume test at 2 ranks with DDP: 20 steps straight vs 10 steps, stop,
// resume, 10 more. In float32 (the trainer's models have no float64 mode),
// and bitwise: both runs do the same all-reduces in the same order on the
// same data, so nothing may differ. Rank 0 writes the checkpoints; each rank
// checks its own model through TrainSummary::state_digest and its own data
// order through the per-step loss in its --metrics file. 200 samples over 2
// ranks in batches of 8 make 12 steps per epoch, so the resumed run starts
// 80 samples into rank's shard of epoch 0 and crosses into epoch 1.
class ResumeTwoRanks : public ::testing::TestWithParam<std::string> {};

TEST_P(ResumeTwoRanks, DdpGivesTheSameParametersOnBothRanks) {
  TempDir straight_dir, resumed_dir;  // made before the fork: both ranks share them
  const std::string backend = GetParam();
  tandem::testing::expect_ranks_succeed(
      2,
      [&](int rank, int size, int port) {
        auto comm = tandem::testing::init_rank(rank, size, port, backend);
        ASSERT_EQ(comm->backend(), backend);

        TrainerOptions o = resume_run_options(8);
        o.strategy.kind = StrategyKind::kDdp;
        o.observe.log_every = 1;

        TrainerOptions straight = o;
        straight.checkpoint.dir = straight_dir.path().string();
        straight.observe.metrics_file = straight_dir.file("metrics-{rank}.jsonl");
        const TrainSummary straight_summary = train(straight, comm, nullptr);
        EXPECT_EQ(straight_summary.steps, 20);

        TrainerOptions first = o;
        first.checkpoint.dir = resumed_dir.path().string();
        first.observe.metrics_file = resumed_dir.file("metrics-{rank}.jsonl");
        first.run.stop_at_step = 10;
        const TrainSummary first_summary = train(first, comm, nullptr);
        EXPECT_EQ(first_summary.steps, 10);
        // The digest can tell 10 steps from 20.
        EXPECT_NE(first_summary.state_digest, straight_summary.state_digest);
        Checkpoint mid = load_latest(first.checkpoint.dir);
        EXPECT_EQ(mid.step, 10);
        EXPECT_EQ(mid.world_size, 2);
        EXPECT_EQ(mid.epoch, 0);
        EXPECT_EQ(mid.samples_in_epoch, 80);  // per rank: 10 steps of 8

        TrainerOptions second = first;
        second.run.stop_at_step = 0;
        second.checkpoint.resume = ResumeMode::kRequire;
        const TrainSummary resumed_summary = train(second, comm, nullptr);
        EXPECT_EQ(resumed_summary.steps, 10);

        // This rank's parameters and buffers, bitwise.
        EXPECT_EQ(resumed_summary.state_digest, straight_summary.state_digest)
            << "rank " << rank << ": the resumed model differs from the straight one";
        // This rank's data order: the same loss at every one of the 20 steps.
        auto want = losses_by_step(straight_dir.file(fmt::format("metrics-{}.jsonl", rank)));
        auto got = losses_by_step(resumed_dir.file(fmt::format("metrics-{}.jsonl", rank)));
        ASSERT_EQ(want.size(), 20u);
        ASSERT_EQ(got.size(), 20u);
        for (const auto& [step, loss] : want) {
          EXPECT_EQ(got[step], loss) << "rank " << rank << ", step " << step;
        }
        // Both ranks hold the same model: rank 0's digest, broadcast.
        at::Tensor digest = at::tensor(
            std::vector<int64_t>{static_cast<int64_t>(resumed_summary.state_digest)}, at::kLong);
        comm->broadcast(digest, 0);
        EXPECT_EQ(static_cast<uint64_t>(digest.item<int64_t>()), resumed_summary.state_digest)
            << "rank " << rank << " disagrees with rank 0";

        if (rank == 0) {
          Checkpoint a = read_checkpoint(straight_dir.file("step-20.ckpt"));
          Checkpoint b = read_checkpoint(resumed_dir.file("step-20.ckpt"));
          EXPECT_EQ(b.epoch, 1);
          EXPECT_EQ(a.samples_in_epoch, b.samples_in_epoch);
          expect_same_state(a, b);
        }
      },
      {.timeout = std::chrono::milliseconds(120'000), .env = {}});
}

INSTANTIATE_TEST_SUITE_P(Backends, ResumeTwoRanks, ::testing::Values("shm", "gloo"));

}  // namespace
}  // namespace tandem::train
