#include "bench_fsdp.h"

#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adamw.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench_stats.h"
#include "child_ranks.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"
#include "tandem/memory/storage_set.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"
#include "tandem/parallel/optimizer_state.h"
#include "tandem/train/models/models.h"

namespace tandem::tools {
namespace {

// The parent waits this long for its children (their collectives time out
// after 300 s each), then kills them.
constexpr int kChildTimeoutS = 1800;

struct Options {
  std::string model = "gpt-mini";
  int ranks = 2;
  int64_t batch = 8;
  int steps = 10;
  int warmup = 3;
  int rounds = 3;
  std::vector<std::string> wrap;  // module types; default per model
  bool no_prefetch = false;
  bool no_overlap = false;  // FSDP without reduce-scatter overlap
  std::string strategy;     // internal: "ddp" or "fsdp" for a rank process
};

struct Result {
  double step_seconds = 0;  // slowest rank's mean over the timed steps
  double state_bytes = 0;   // largest rank's peak model state
  // FSDP: the peaks of each part, and 16/N bytes per parameter plus the
  // largest unit's parameters and gradients (4 + 4 bytes per element).
  double parameter_bytes = 0, gradient_bytes = 0, optimizer_bytes = 0, zero3_bytes = 0;
};

std::vector<std::string> default_wrap(const std::string& model) {
  if (model == "gpt-mini") return {"GptBlockImpl"};
  if (model == "mlp") return {"LinearImpl"};
  return {"BasicBlockImpl", "BottleneckImpl", "Conv2dImpl"};
}

// Trains warmup + steps steps on one random batch; returns this rank's mean
// step time and peak model-state bytes.
Result run_steps(const Options& o, const std::shared_ptr<Communicator>& comm) {
  at::manual_seed(0);
  auto model = train::make_model(o.model);
  auto spec = train::input_spec(o.model);
  std::unique_ptr<parallel::DistributedDataParallel> ddp;
  std::unique_ptr<parallel::FullyShardedDataParallel> fsdp;
  std::vector<at::Tensor> params = model.ptr()->parameters();
  if (o.strategy == "fsdp") {
    parallel::FsdpOptions f;
    f.wrap.module_types = o.wrap.empty() ? default_wrap(o.model) : o.wrap;
    f.prefetch = !o.no_prefetch;
    f.overlap_reduce_scatter = !o.no_overlap;
    fsdp = std::make_unique<parallel::FullyShardedDataParallel>(model.ptr(), comm, f);
    params = fsdp->parameters();
  } else {
    ddp = std::make_unique<parallel::DistributedDataParallel>(model.ptr(), comm);
  }
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-4));
  if (fsdp) fsdp->account_optimizer(&opt);
  at::manual_seed(comm->rank() + 1);
  at::Tensor x = spec.dtype == at::kLong
                     ? at::randint(0, spec.token_range, spec.input_shape(o.batch), at::kLong)
                     : at::randn(spec.input_shape(o.batch));
  at::Tensor y = at::randint(0, spec.classes, spec.target_batch_shape(o.batch), at::kLong);
  std::chrono::steady_clock::time_point start;
  for (int s = 0; s < o.warmup + o.steps; ++s) {
    if (s == o.warmup) {
      comm->barrier();
      start = std::chrono::steady_clock::now();
    }
    opt.zero_grad();
    at::Tensor logits = model.forward(x);
    torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}))
        .backward();
    opt.step();
  }
  Result r;
  r.step_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / o.steps;
  if (fsdp) {
    r.state_bytes = static_cast<double>(fsdp->memory().peak_total());
    r.parameter_bytes = static_cast<double>(fsdp->memory().peak().parameters);
    r.gradient_bytes = static_cast<double>(fsdp->memory().peak().gradients);
    r.optimizer_bytes = static_cast<double>(fsdp->memory().peak().optimizer_state);
    int64_t total = 0, largest = 0;
    for (const auto& unit : fsdp->units()) {
      total += unit.layout.numel;
      largest = std::max(largest, unit.layout.numel);
    }
    r.zero3_bytes = 16.0 * static_cast<double>(total) / comm->size() + 8.0 * largest;
  } else {  // replicated: every tensor is whole all the time
    r.state_bytes = static_cast<double>(
        memory::storage_bytes(params) + memory::storage_bytes(memory::gradients_of(params)) +
        memory::storage_bytes(parallel::optimizer_state_tensors(opt)));
  }
  return r;
}

int run_as_rank(const Options& o) {
  auto comm = init({.backend = Backend::kAuto,
                    .timeout = Millis(300'000),
                    .rendezvous_timeout = Millis(60'000)});
  Result r = run_steps(o, comm);
  at::Tensor t = at::tensor(std::vector<double>{r.step_seconds, r.state_bytes, r.parameter_bytes,
                                                r.gradient_bytes, r.optimizer_bytes, r.zero3_bytes},
                            at::kDouble);
  comm->all_reduce(t, ReduceOp::kMax);
  if (comm->rank() == 0) {
    std::printf("%.9f %.0f %.0f %.0f %.0f %.0f\n", t[0].item<double>(), t[1].item<double>(),
                t[2].item<double>(), t[3].item<double>(), t[4].item<double>(), t[5].item<double>());
    std::fflush(stdout);
  }
  return 0;
}

// Starts o.ranks children running `/proc/self/exe bench fsdp --strategy S`,
// one BLAS/OpenMP thread each unless set otherwise, and reads rank 0's line.
Result run_children(const Options& o, const std::string& strategy) {
  std::vector<std::string> args = {"tandem",  "bench",   "fsdp",
                                   "--strategy", strategy, "--model",
                                   o.model,   "--batch-size", std::to_string(o.batch),
                                   "--steps", std::to_string(o.steps), "--warmup",
                                   std::to_string(o.warmup)};
  for (const auto& w : o.wrap) {
    args.push_back("--wrap");
    args.push_back(w);
  }
  if (o.no_prefetch) args.push_back("--no-prefetch");
  if (o.no_overlap) args.push_back("--no-overlap");
  const auto run = tools::run_children(args, {.processes = o.ranks, .timeout_s = kChildTimeoutS, .log_dir = {}});
  Result r;
  TANDEM_CHECK(run.error.empty() &&
                   std::sscanf(run.output.c_str(), "%lf %lf %lf %lf %lf %lf", &r.step_seconds,
                               &r.state_bytes, &r.parameter_bytes, &r.gradient_bytes,
                               &r.optimizer_bytes, &r.zero3_bytes) == 6,
               "bench fsdp: the {}-rank {} run failed: {}", o.ranks, strategy,
               run.error.empty() ? "no result line" : run.error);
  return r;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return fmt::format("{} {} {}", one, five, fifteen);
}

int run(const Options& o) {
  TANDEM_CHECK(o.ranks >= 1 && o.ranks <= 64, "bench fsdp: --ranks must be in [1, 64] (got {})",
               o.ranks);
  TANDEM_CHECK(o.batch >= 1 && o.steps >= 1 && o.warmup >= 0 && o.rounds >= 1,
               "bench fsdp: --batch-size, --steps and --rounds must be >= 1, --warmup >= 0");
  train::input_spec(o.model);  // validates the name
  if (!o.strategy.empty()) {
    TANDEM_CHECK(o.strategy == "ddp" || o.strategy == "fsdp",
                 "bench fsdp: --strategy must be ddp or fsdp (got '{}')", o.strategy);
    return run_as_rank(o);
  }
  const std::string load_before = load_average();
  std::vector<double> ddp_sps, fsdp_sps, ratios;
  Result ddp, fsdp;
  for (int round = 0; round < o.rounds; ++round) {
    // Alternate which goes first, so that neither always meets the same load.
    if (round % 2 == 0) {
      ddp = run_children(o, "ddp");
      fsdp = run_children(o, "fsdp");
    } else {
      fsdp = run_children(o, "fsdp");
      ddp = run_children(o, "ddp");
    }
    ddp_sps.push_back(static_cast<double>(o.batch * o.ranks) / ddp.step_seconds);
    fsdp_sps.push_back(static_cast<double>(o.batch * o.ranks) / fsdp.step_seconds);
    ratios.push_back(fsdp_sps.back() / ddp_sps.back());
  }
  nlohmann::json j = {{"bench", "fsdp"},
                      {"model", o.model},
                      {"ranks", o.ranks},
                      {"batch_per_rank", o.batch},
                      {"steps", o.steps},
                      {"rounds", o.rounds},
                      {"wrap", o.wrap.empty() ? default_wrap(o.model) : o.wrap},
                      {"prefetch", !o.no_prefetch},
                      {"overlap_reduce_scatter", !o.no_overlap},
                      {"samples_per_s_ddp", median(ddp_sps)},
                      {"samples_per_s_fsdp", median(fsdp_sps)},
                      {"fsdp_over_ddp", median(ratios)},
                      {"fsdp_over_ddp_per_round", ratios},
                      {"model_state_bytes_per_rank_ddp", ddp.state_bytes},
                      {"model_state_bytes_per_rank_fsdp", fsdp.state_bytes},
                      {"fsdp_peak_bytes",
                       {{"parameters", fsdp.parameter_bytes},
                        {"gradients", fsdp.gradient_bytes},
                        {"optimizer_state", fsdp.optimizer_bytes}}},
                      {"zero3_theory_bytes", fsdp.zero3_bytes},
                      {"fsdp_over_theory", fsdp.state_bytes / fsdp.zero3_bytes},
                      {"loadavg_before", load_before},
                      {"loadavg_after", load_average()}};
  std::cout << j.dump() << std::endl;
  return 0;
}

}  // namespace

void add_bench_fsdp(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto* cmd = bench.add_subcommand(
      "fsdp", "Samples/s and model-state bytes per rank: N DDP ranks vs N FSDP ranks");
  cmd->add_option("--model", o->model, "mlp|convnet|resnet18|resnet50|gpt-mini (default gpt-mini)");
  cmd->add_option("--ranks", o->ranks, "ranks of each run (default 2)");
  cmd->add_option("--batch-size", o->batch, "samples per rank per step (default 8)");
  cmd->add_option("--steps", o->steps, "timed steps (default 10)");
  cmd->add_option("--warmup", o->warmup, "untimed steps first (default 3)");
  cmd->add_option("--rounds", o->rounds, "DDP/FSDP run pairs; the median is reported (default 3)");
  cmd->add_option("--wrap", o->wrap,
                  "module types that become FSDP units (default: GptBlockImpl for gpt-mini, "
                  "LinearImpl for mlp)");
  cmd->add_flag("--no-prefetch", o->no_prefetch, "FSDP without all-gather prefetch");
  cmd->add_flag("--no-overlap", o->no_overlap,
                "FSDP holding one unit's full gradients at a time (no reduce-scatter overlap)");
  cmd->add_option("--strategy", o->strategy, "internal: run as one rank of ddp or fsdp")->group("");
  cmd->callback([o, &exit_code] { exit_code = run(*o); });
}

}  // namespace tandem::tools
