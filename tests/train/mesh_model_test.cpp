// Model parallelism against the computation it replaces. MeshModel on 4
// ranks (dp=2 x pp=2 with GPipe, 1F1B, ZeRO-1, recomputation and gradient
// clipping; dp=2 x tp=2; pp=4; pp=2 x tp=2 with clipping) trains 5 steps,
// and on 8 ranks (dp=2 x pp=2 x tp=2) 3 steps, like one process on the same
// global batch:
// the loss of every step and the whole model's parameters afterwards agree
// (float64, rtol 1e-9). `tandem train --mesh` logs the same losses as DDP on
// 2 ranks with the same global batch. Bad meshes and flags are named.
#include "tandem/train/mesh_model.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tandem/core/error.h"
#include "tandem/train/models/models.h"
#include "tandem/train/strategy.h"
#include "tandem/train/trainer.h"
#include "tests/support/multiproc.h"
#include "tests/support/rank_init.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

struct MeshCase {
  std::string name, mesh, model, schedule = "1f1b", strategy = "ddp";
  int micro_batches = 4;
  bool recompute = false;
  double clip = 0;  // --clip-grad-norm
  int steps = 5;
};

void PrintTo(const MeshCase& c, std::ostream* os) { *os << c.name; }

TrainerOptions options_of(const MeshCase& c) {
  TrainerOptions o;
  o.model.kind = model_kind(c.model);
  o.mesh.shape = parse_mesh(c.mesh);
  o.mesh.schedule = parse_choice<PipelineSchedule>(c.schedule);
  o.mesh.micro_batches = c.micro_batches;
  o.mesh.recompute = c.recompute;
  o.optimizer.clip_grad_norm = c.clip;
  o.strategy.kind = parse_choice<StrategyKind>(c.strategy);
  o.model.dtype = Dtype::kFloat64;
  o.optimizer.lr = 0.05;
  o.optimizer.momentum = 0.9;
  o.optimizer.nesterov = true;
  o.run.seed = 3;
  return o;
}

// Step s's global batch (8 samples), as the model takes it.
std::pair<at::Tensor, at::Tensor> global_batch(ModelKind model, int step) {
  at::manual_seed(900 + step);
  const ModelInput spec = input_spec(model);
  if (spec.dtype == at::kLong) {
    return {at::randint(0, spec.token_range, spec.input_shape(8), at::kLong),
            at::randint(0, spec.classes, spec.target_batch_shape(8), at::kLong)};
  }
  return {at::randn(spec.input_shape(8), at::kDouble),
          at::randint(0, spec.classes, spec.target_batch_shape(8), at::kLong)};
}

// The mesh of `c` on as many ranks as it needs trains c.steps steps like
// one process on the global batch: the same loss at every step and the same
// parameters afterwards.
void expect_trains_like_one_process(const MeshCase& c) {
  tandem::testing::expect_ranks_succeed(
      parse_mesh(c.mesh).size(),
      [&](int rank, int size, int port) {
        const TrainerOptions o = options_of(c);
        MeshModel mesh(o, tandem::testing::shm_rank(rank, size, port, "mesh"));
        const int dp = mesh.data()->size(), dp_rank = mesh.data()->rank();
        std::vector<double> losses;
        for (int s = 0; s < c.steps; ++s) {
          auto [x, t] = global_batch(o.model.kind, s);  // sharded over the data dimension only
          losses.push_back(
              mesh.train_step(x.chunk(dp)[dp_rank], t.chunk(dp)[dp_rank], o.optimizer.lr));
        }
        auto got = mesh.full_parameters();
        if (rank != 0) return;
        at::manual_seed(o.run.seed);
        torch::nn::AnyModule ref = make_model(o.model.kind);
        ref.ptr()->to(at::kDouble);
        auto opt = make_optimizer(o, ref.ptr()->parameters());
        const double clip = o.optimizer.clip_grad_norm;
        for (int s = 0; s < c.steps; ++s) {
          auto [x, t] = global_batch(o.model.kind, s);
          opt->zero_grad();
          at::Tensor logits = ref.forward(x);
          at::Tensor loss = torch::nn::functional::cross_entropy(
              logits.reshape({-1, logits.size(-1)}), t.reshape({-1}));
          loss.backward();
          if (clip > 0) {
            const double norm = torch::nn::utils::clip_grad_norm_(ref.ptr()->parameters(), clip);
            EXPECT_GT(norm, clip) << "step " << s << ": the clip did not act";
          }
          opt->step();
          EXPECT_NEAR(losses[static_cast<size_t>(s)], loss.item<double>(),
                      1e-9 * loss.item<double>())
              << "step " << s;
        }
        auto want = ref.ptr()->named_parameters();
        ASSERT_EQ(got.keys(), want.keys());
        for (const auto& item : want) {
          const at::Tensor& g = got[item.key()];
          EXPECT_TRUE(at::allclose(g, item.value(), 1e-9, 1e-12))
              << item.key() << " differs by " << (g - item.value()).abs().max().item<double>();
        }
      },
      {.timeout = std::chrono::milliseconds(150'000), .env = {}});
}

class MeshEquivalence : public ::testing::TestWithParam<MeshCase> {};

TEST_P(MeshEquivalence, TrainsLikeOneProcessOnTheGlobalBatch) {
  expect_trains_like_one_process(GetParam());
}

INSTANTIATE_TEST_SUITE_P(
    Meshes, MeshEquivalence,
    ::testing::Values(
        MeshCase{
            .name = "dp2_pp2_mlp_gpipe", .mesh = "dp=2,pp=2", .model = "mlp", .schedule = "gpipe"},
        MeshCase{.name = "dp2_pp2_mlp_1f1b_zero1",
                 .mesh = "dp=2,pp=2",
                 .model = "mlp",
                 .strategy = "zero1"},
        MeshCase{.name = "dp2_pp2_gpt_1f1b_recompute",
                 .mesh = "dp=2,pp=2",
                 .model = "gpt-mini",
                 .micro_batches = 2,
                 .recompute = true},
        MeshCase{.name = "dp2_tp2_gpt", .mesh = "dp=2,tp=2", .model = "gpt-mini"},
        MeshCase{.name = "pp4_mlp_1f1b", .mesh = "pp=4", .model = "mlp", .micro_batches = 8},
        MeshCase{.name = "dp2_pp2_mlp_clip", .mesh = "dp=2,pp=2", .model = "mlp", .clip = 0.05},
        MeshCase{.name = "pp2_tp2_gpt_gpipe_clip",
                 .mesh = "pp=2,tp=2",
                 .model = "gpt-mini",
                 .schedule = "gpipe",
                 .micro_batches = 2,
                 .clip = 0.05}),
    [](const auto& info) { return info.param.name; });

// All three dimensions at once (docs/model-parallel.md claims it): 8 ranks,
// gpt-mini in 2 stages of 2 slices each, averaged over 2 data ranks.
TEST(MeshEquivalence3d, Dp2Pp2Tp2TrainsLikeOneProcessOnTheGlobalBatch) {
  expect_trains_like_one_process(MeshCase{.name = "dp2_pp2_tp2_gpt",
                                          .mesh = "dp=2,pp=2,tp=2",
                                          .model = "gpt-mini",
                                          .micro_batches = 2,
                                          .steps = 3});
}

// The trainer's per-step losses (rank 0's metrics) for `o` on `world` ranks.
std::vector<double> logged_losses(int world, TrainerOptions o, const std::string& file) {
  o.observe.metrics_file = file;
  o.observe.log_every = 1;
  tandem::testing::expect_ranks_succeed(
      world,
      [&](int rank, int size, int port) {
        tandem::train::train(o, tandem::testing::init_rank(rank, size, port), nullptr);
      },
      {.timeout = std::chrono::milliseconds(150'000), .env = {}});
  std::vector<double> losses;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.value("rank", -1) == 0 && j.contains("step")) losses.push_back(j["loss_all_ranks"]);
  }
  return losses;
}

TEST(MeshTraining, TrainerLogsTheLossesOfDdpWithTheSameGlobalBatch) {
  testing::TempDir dir;
  TrainerOptions o;
  o.model.kind = ModelKind::kGptMini;
  o.data.source = "synthetic-tokens";
  o.data.synthetic_size = 64;
  o.run.steps = 3;
  o.run.batch_size = 4;
  o.model.dtype = Dtype::kFloat64;
  o.run.seed = 5;
  o.observe.eval_batches = 1;
  const auto ddp = logged_losses(2, o, dir.file("ddp.jsonl"));
  ASSERT_EQ(ddp.size(), 3u);
  for (const std::string mesh : {"dp=2,pp=2", "dp=2,tp=2"}) {
    o.mesh.shape = parse_mesh(mesh);
    o.mesh.micro_batches = 2;
    const auto got = logged_losses(4, o, dir.file(mesh + ".jsonl"));
    ASSERT_EQ(got.size(), ddp.size()) << mesh;
    for (size_t s = 0; s < ddp.size(); ++s) {
      EXPECT_NEAR(got[s], ddp[s], 1e-9 * ddp[s]) << mesh << " step " << s + 1;
    }
  }
}

TEST(MeshOptions, ShapesParseAndBadOnesAreNamed) {
  const MeshShape m = parse_mesh("dp=2,pp=4");
  EXPECT_EQ(m.dp, 2);
  EXPECT_EQ(m.pp, 4);
  EXPECT_EQ(m.tp, 1);
  EXPECT_EQ(parse_mesh("tp=2").size(), 2);
  EXPECT_EQ(parse_mesh("dp=2,pp=2,tp=2").size(), 8);
  for (const std::string bad : {"", "dp=2,dp=2", "dp=0", "dp=x", "ep=2", "dp2", "dp=2,,tp=2"}) {
    EXPECT_THROW(parse_mesh(bad), InvalidArgument) << bad;
  }
  auto message = [](const TrainerOptions& o, int world) {
    try {
      validate_options(o, world);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  TrainerOptions o;
  o.model.kind = ModelKind::kGptMini;
  o.mesh.shape = parse_mesh("dp=2,tp=2");
  EXPECT_EQ(message(o, 4), "accepted");
  EXPECT_NE(message(o, 3).find("needs 4 ranks"), std::string::npos) << message(o, 3);
  o.model.kind = ModelKind::kResNet18;
  EXPECT_NE(message(o, 4).find("tensor parallelism splits --model gpt-mini"), std::string::npos);
  o.mesh.shape = parse_mesh("dp=2,pp=2");
  EXPECT_NE(message(o, 4).find("mlp or gpt-mini"), std::string::npos);
  o.model.kind = ModelKind::kMlp;
  o.strategy.kind = StrategyKind::kZero3;
  EXPECT_NE(message(o, 4).find("ddp or zero1"), std::string::npos);
  o.strategy.kind = StrategyKind::kDdp;
  o.strategy.async.backup_workers = 1;
  o.run.steps = 3;
  EXPECT_NE(message(o, 4).find("--backup-workers"), std::string::npos) << message(o, 4);
  o.strategy.async.backup_workers = 0;
  o.strategy.kind = StrategyKind::kDdp;
  o.mesh.micro_batches = 5;
  EXPECT_NE(message(o, 4).find("--micro-batches 5"), std::string::npos);
  o.mesh.micro_batches = 4;
  o.checkpoint.dir = "ckpt";
  EXPECT_NE(message(o, 4).find("checkpoints"), std::string::npos);
  o.checkpoint.dir.clear();
  o.mesh.shape = parse_mesh("dp=4");
  o.mesh.recompute = true;
  EXPECT_NE(message(o, 4).find("--recompute"), std::string::npos);
}

}  // namespace
}  // namespace tandem::train
