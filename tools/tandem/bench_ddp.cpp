#include "bench_ddp.h"

#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench_stats.h"
#include "child_ranks.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tandem/train/models/models.h"

namespace tandem::tools {
namespace {

// The parent waits this long for its children (their collectives time out
// after 300 s each), then kills them.
constexpr int kChildTimeoutS = 1800;

struct Options {
  std::string model = "mlp";
  std::vector<int64_t> mlp_hidden;  // the MLP's hidden widths; empty: the zoo's default
  int ranks = 2;
  int64_t batch = 32;
  int steps = 10;
  int warmup = 3;
  int rounds = 1;
  double bucket_cap_mb = 25.0;       // DdpOptions::bucket_cap_mb
  // DdpOptions::gradient_as_bucket_view; on, as `tandem train` runs DDP.
  bool grad_as_bucket_view = true;
  bool as_rank = false;    // internal: this process is one of the N ranks
  bool as_single = false;  // internal: this process is the one-process baseline
};

struct Result {
  double step_seconds = 0;     // median-free mean over the timed steps
  double exposed_seconds = 0;  // mean wait after backward per step
};

train::ModelOptions model_options(const Options& o) {
  train::ModelOptions mo;
  if (!o.mlp_hidden.empty()) mo.mlp.hidden_sizes = o.mlp_hidden;
  return mo;
}

// Trains `steps` + `warmup` steps on random batches shaped for the model.
Result run_steps(const Options& o, const std::shared_ptr<Communicator>& comm) {
  at::manual_seed(0);
  const train::ModelOptions mo = model_options(o);
  auto model = train::make_model(o.model, mo);
  auto spec = train::input_spec(o.model, mo);
  std::unique_ptr<parallel::DistributedDataParallel> ddp;
  if (comm) {
    parallel::DdpOptions options;
    options.bucket_cap_mb = o.bucket_cap_mb;
    options.gradient_as_bucket_view = o.grad_as_bucket_view;
    ddp = std::make_unique<parallel::DistributedDataParallel>(model.ptr(), comm, options);
  }
  torch::optim::SGD opt(model.ptr()->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  at::manual_seed(comm ? comm->rank() + 1 : 1);
  at::Tensor x = spec.dtype == at::kLong
                     ? at::randint(0, spec.token_range, spec.input_shape(o.batch), at::kLong)
                     : at::randn(spec.input_shape(o.batch));
  at::Tensor y = at::randint(0, spec.classes, spec.target_batch_shape(o.batch), at::kLong);
  Result r;
  std::chrono::steady_clock::time_point start;
  for (int s = 0; s < o.warmup + o.steps; ++s) {
    if (s == o.warmup) {
      if (comm) comm->barrier();
      start = std::chrono::steady_clock::now();
    }
    opt.zero_grad();
    at::Tensor logits = model.forward(x);
    torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}))
        .backward();
    opt.step();
    if (ddp && s >= o.warmup) r.exposed_seconds += ddp->last_stats().wait_seconds;
  }
  r.step_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / o.steps;
  r.exposed_seconds /= o.steps;
  return r;
}

// This process is rank RANK of the N-rank run: train, then rank 0 prints
// the slowest rank's step time and the mean exposed time as one line.
int run_as_rank(const Options& o) {
  if (o.as_single) {
    Result r = run_steps(o, nullptr);
    std::printf("%.9f %.9f\n", r.step_seconds, r.exposed_seconds);
    std::fflush(stdout);
    return 0;
  }
  auto comm = init({.backend = Backend::kAuto,
                    .timeout = Millis(300'000),
                    .rendezvous_timeout = Millis(60'000)});
  Result r = run_steps(o, comm);
  at::Tensor t = at::tensor(std::vector<double>{r.step_seconds, r.exposed_seconds}, at::kDouble);
  at::Tensor slowest = t.clone();
  comm->all_reduce(slowest, ReduceOp::kMax);
  comm->all_reduce(t, ReduceOp::kAvg);
  if (comm->rank() == 0) {
    std::printf("%.9f %.9f\n", slowest[0].item<double>(), t[1].item<double>());
    std::fflush(stdout);
  }
  return 0;
}

// What one run of children does.
enum class RunKind {
  kDdp,          // o.ranks processes training with DDP
  kOne,          // one process without DDP: the baseline
  kIndependent,  // o.ranks processes training alone at once, no communication:
                 // what the machine's shared cores, caches and memory allow
};

// Starts the run's children, each `/proc/self/exe bench ddp --as-rank`, and
// reads the lines they print (rank 0's for kDdp, one per process otherwise);
// the step time is the slowest process's. Every child gets one BLAS and
// OpenMP thread unless the user set otherwise, so all runs get the same
// per-process resources.
Result run_children(const Options& o, RunKind kind) {
  const bool single = kind != RunKind::kDdp;
  const int ranks = kind == RunKind::kOne ? 1 : o.ranks;
  std::vector<std::string> args = {"tandem",       "bench",
                                   "ddp",          "--as-rank",
                                   "--model",      o.model,
                                   "--batch-size", std::to_string(o.batch),
                                   "--steps",      std::to_string(o.steps),
                                   "--warmup",     std::to_string(o.warmup),
                                   "--bucket-cap-mb", std::to_string(o.bucket_cap_mb)};
  if (!o.grad_as_bucket_view) args.push_back("--no-grad-as-bucket-view");
  if (!o.mlp_hidden.empty()) {
    args.push_back("--mlp-hidden");
    args.push_back(fmt::format("{}", fmt::join(o.mlp_hidden, ",")));
  }
  if (single) args.push_back("--as-single");
  const auto run = tools::run_children(
      args, {.processes = ranks, .independent = single, .timeout_s = kChildTimeoutS, .log_dir = {}});
  const bool ok = run.error.empty();
  const std::string& text = run.output;
  Result r;
  int lines = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    Result one;
    if (std::sscanf(line.c_str(), "%lf %lf", &one.step_seconds, &one.exposed_seconds) != 2) break;
    r.step_seconds = std::max(r.step_seconds, one.step_seconds);
    r.exposed_seconds = std::max(r.exposed_seconds, one.exposed_seconds);
    ++lines;
  }
  const int expected = kind == RunKind::kDdp ? 1 : ranks;
  TANDEM_CHECK(ok && lines == expected, "bench ddp: the {} run failed: {}",
               kind == RunKind::kDdp   ? fmt::format("{}-rank", ranks)
               : kind == RunKind::kOne ? std::string("one-process")
                                       : fmt::format("{} independent processes'", ranks),
               ok ? "no result line" : run.error);
  return r;
}

int run(const Options& o) {
  TANDEM_CHECK(o.ranks >= 1 && o.ranks <= 64, "bench ddp: --ranks must be in [1, 64] (got {})",
               o.ranks);
  TANDEM_CHECK(o.batch >= 1 && o.steps >= 1 && o.warmup >= 0 && o.rounds >= 1,
               "bench ddp: --batch-size, --steps and --rounds must be >= 1, --warmup >= 0");
  TANDEM_CHECK(o.bucket_cap_mb > 0, "bench ddp: --bucket-cap-mb must be positive (got {})",
               o.bucket_cap_mb);
  for (int64_t w : o.mlp_hidden) {
    TANDEM_CHECK(w > 0, "bench ddp: --mlp-hidden widths must be positive (got {})",
                 fmt::join(o.mlp_hidden, ","));
  }
  train::input_spec(o.model, model_options(o));  // validates the name
  if (o.as_rank) return run_as_rank(o);
  // Each round runs the three kinds in a rotated order, so none always meets
  // the machine in the same state; the figures are medians over the rounds.
  const std::array<RunKind, 3> kinds = {RunKind::kDdp, RunKind::kOne, RunKind::kIndependent};
  std::vector<double> n_step, one_step, free_step, n_exposed, efficiency;
  for (int round = 0; round < o.rounds; ++round) {
    Result n, one, alone;
    for (size_t k = 0; k < kinds.size(); ++k) {
      const RunKind kind = kinds[(k + static_cast<size_t>(round)) % kinds.size()];
      Result r = run_children(o, kind);
      (kind == RunKind::kDdp ? n : kind == RunKind::kOne ? one : alone) = r;
    }
    n_step.push_back(n.step_seconds);
    one_step.push_back(one.step_seconds);
    free_step.push_back(alone.step_seconds);
    n_exposed.push_back(n.exposed_seconds);
    efficiency.push_back(one.step_seconds / n.step_seconds);
  }
  const double one_sps = static_cast<double>(o.batch) / median(one_step);
  const double n_sps = static_cast<double>(o.batch * o.ranks) / median(n_step);
  const double free_sps = static_cast<double>(o.batch * o.ranks) / median(free_step);
  // Note [Efficiency without communication]: N processes that train at once
  // without talking still share the host's cores, caches and memory
  // bandwidth, and the slowest sets the pace of a synchronous step. Their
  // efficiency is the ceiling no collective can beat; the ratio to it is
  // what communication and synchronisation cost.
  nlohmann::json j = {{"bench", "ddp"},
                      {"model", o.model},
                      {"mlp_hidden", model_options(o).mlp.hidden_sizes},
                      {"ranks", o.ranks},
                      {"batch_per_rank", o.batch},
                      {"steps", o.steps},
                      {"rounds", o.rounds},
                      {"bucket_cap_mb", o.bucket_cap_mb},
                      {"gradient_as_bucket_view", o.grad_as_bucket_view},
                      {"samples_per_s_1proc", one_sps},
                      {"samples_per_s_nranks", n_sps},
                      {"scaling_efficiency", n_sps / (o.ranks * one_sps)},
                      {"scaling_efficiency_per_round", efficiency},
                      {"samples_per_s_n_independent", free_sps},
                      {"efficiency_without_comm", free_sps / (o.ranks * one_sps)},
                      {"efficiency_over_without_comm", n_sps / free_sps},
                      {"step_ms_1proc", median(one_step) * 1e3},
                      {"step_ms_nranks", median(n_step) * 1e3},
                      {"step_ms_n_independent", median(free_step) * 1e3},
                      {"exposed_comm_ms_per_step", median(n_exposed) * 1e3}};
  std::cout << j.dump() << std::endl;
  return 0;
}

}  // namespace

void add_bench_ddp(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto* cmd = bench.add_subcommand(
      "ddp",
      "Samples/s of one process vs N DDP ranks vs N processes without communication, scaling "
      "efficiency, exposed comm time");
  cmd->add_option("--model", o->model, "mlp|convnet|resnet18|resnet50|gpt-mini");
  cmd->add_option("--mlp-hidden", o->mlp_hidden,
                  "the MLP's hidden widths, comma-separated (default: the zoo's 256,256)")
      ->delimiter(',');
  cmd->add_option("--ranks", o->ranks, "ranks of the parallel run (default 2)");
  cmd->add_option("--batch-size", o->batch, "samples per rank per step (default 32)");
  cmd->add_option("--steps", o->steps, "timed steps (default 10)");
  cmd->add_option("--warmup", o->warmup, "untimed steps first (default 3)");
  cmd->add_option("--bucket-cap-mb", o->bucket_cap_mb, "DDP bucket size in MiB (default 25)");
  cmd->add_flag("--grad-as-bucket-view,!--no-grad-as-bucket-view", o->grad_as_bucket_view,
                "DDP's .grad aliases its bucket, so gradients are not copied (default on, as "
                "tandem train; PyTorch's default is off)");
  cmd->add_option("--rounds", o->rounds,
                  "rounds of the three runs (N ranks, one process, N processes without "
                  "communication) in rotated order; medians reported (default 1)");
  cmd->add_flag("--as-rank", o->as_rank, "internal: run as one rank of the parallel run")
      ->group("");
  cmd->add_flag("--as-single", o->as_single, "internal: run as the one-process baseline")
      ->group("");
  cmd->callback([o, &exit_code] { exit_code = run(*o); });
}

}  // namespace tandem::tools
