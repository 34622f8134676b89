// `tandem bench ddp`: training throughput of one process against N ranks
// under DistributedDataParallel (one intra-op thread each, shared memory),
// measured in one invocation; prints one JSON line with both samples/s, the
// scaling efficiency (N-rank samples/s over N x one process's) and the
// exposed communication time per step (the wait after backward).
#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/optim/sgd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench/child_ranks.h"
#include "bench/flag_values.h"
#include "bench/subcommands.h"
#include "bench/training_steps.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"

namespace tandem::bench {
namespace {

// What one run of children does.
enum class RunKind {
  kDdp,          // o.ranks processes training with DDP
  kOne,          // one process without DDP: the baseline
  kIndependent,  // o.ranks processes training alone at once, no communication:
                 // what the machine's shared cores, caches and memory allow
};
NLOHMANN_JSON_SERIALIZE_ENUM(RunKind, {{RunKind::kDdp, "ddp"},
                                       {RunKind::kOne, "one"},
                                       {RunKind::kIndependent, "independent"}})

struct Options {
  std::string model = "mlp";
  std::vector<int64_t> mlp_hidden;  // the MLP's hidden widths; empty: the zoo's default
  int ranks = 2;
  int64_t batch = 32;
  int steps = 10;
  int warmup = 3;
  int rounds = 1;
  double bucket_cap_mb = 25.0;  // DdpOptions::bucket_cap_mb
  // DdpOptions::gradient_as_bucket_view; on, as `tandem train` runs DDP.
  bool grad_as_bucket_view = true;
  RunKind kind = RunKind::kDdp;  // of a child
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Options, model, mlp_hidden, ranks, batch, steps,
                                                warmup, rounds, bucket_cap_mb, grad_as_bucket_view,
                                                kind)

struct Result {
  double step_seconds = 0;     // the slowest process's mean over the timed steps
  double exposed_seconds = 0;  // mean wait after backward per step
};

train::ModelOptions model_options(const Options& o) {
  train::ModelOptions mo;
  if (!o.mlp_hidden.empty()) mo.mlp.hidden_sizes = o.mlp_hidden;
  return mo;
}

// Trains warmup + steps steps on one random batch shaped for the model,
// under DDP when `comm` is set.
Result run_steps(const Options& o, const std::shared_ptr<Communicator>& comm) {
  at::manual_seed(0);
  const train::ModelOptions mo = model_options(o);
  auto model = train::make_model(o.model, mo);
  std::unique_ptr<parallel::DistributedDataParallel> ddp;
  if (comm) {
    parallel::DdpOptions options;
    options.bucket_cap_mb = o.bucket_cap_mb;
    options.gradient_as_bucket_view = o.grad_as_bucket_view;
    ddp = std::make_unique<parallel::DistributedDataParallel>(model.ptr(), comm, options);
  }
  torch::optim::SGD opt(model.ptr()->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  at::manual_seed(comm ? comm->rank() + 1 : 1);
  const Batch batch = random_batch(o.model, mo, o.batch);
  Result r;
  r.step_seconds = time_steps(
      model, batch,
      {.warmup = o.warmup,
       .steps = o.steps,
       .zero_grad = [&] { opt.zero_grad(); },
       .step = [&] { opt.step(); },
       .sync = comm.get(),
       .after_timed_step = [&] { r.exposed_seconds += ddp ? ddp->last_stats().wait_seconds : 0; }});
  r.exposed_seconds /= o.steps;
  return r;
}

// This process is a child: one of the N DDP ranks (rank 0 reports the
// slowest rank's step time and the mean exposed time), or a process training
// alone (it reports its own).
int run_child(const Options& o) {
  if (o.kind != RunKind::kDdp) {
    Result r = run_steps(o, nullptr);
    report({{"step_seconds", r.step_seconds}, {"exposed_seconds", r.exposed_seconds}});
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
    report({{"step_seconds", slowest[0].item<double>()}, {"exposed_seconds", t[1].item<double>()}});
  }
  return 0;
}

// One run of `kind`: its children each rerun `tandem bench ddp` with one
// BLAS and OpenMP thread (unless the user set otherwise), so all runs get
// the same per-process resources. The step time is the slowest process's.
Result run_kind(Options o, RunKind kind) {
  o.kind = kind;
  const int ranks = kind == RunKind::kOne ? 1 : o.ranks;
  const std::string what = kind == RunKind::kDdp ? fmt::format("bench ddp: the {}-rank run", ranks)
                           : kind == RunKind::kOne
                               ? std::string("bench ddp: the one-process run")
                               : fmt::format("bench ddp: the {} independent processes' run", ranks);
  const auto lines = run_children(
      what, child_args("ddp", o), ranks,
      {.independent = kind != RunKind::kDdp, .timeout = kChildTimeout, .log_file = {}});
  const size_t expected = kind == RunKind::kDdp ? 1 : static_cast<size_t>(ranks);
  if (lines.size() != expected) {
    throw Error(fmt::format("bench ddp: the children printed {} result lines, not {}", lines.size(),
                            expected));
  }
  Result r;
  for (const auto& j : lines) {
    r.step_seconds = std::max(r.step_seconds, j.at("step_seconds").get<double>());
    r.exposed_seconds = std::max(r.exposed_seconds, j.at("exposed_seconds").get<double>());
  }
  return r;
}

void validate(const Options& o) {
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
}

// Note [Efficiency without communication]: N processes that train at once
// without talking still share the host's cores, caches and memory
// bandwidth, and the slowest sets the pace of a synchronous step. Their
// efficiency is the ceiling no collective can beat; the ratio to it is
// what communication and synchronisation cost.
int run(const Options& o) {
  validate(o);
  // Each round runs the three kinds in a rotated order, so none always meets
  // the machine in the same state; the figures are medians over the rounds.
  const std::array<RunKind, 3> kinds = {RunKind::kDdp, RunKind::kOne, RunKind::kIndependent};
  std::vector<double> n_step, one_step, free_step, n_exposed, efficiency;
  for (int round = 0; round < o.rounds; ++round) {
    Result n, one, alone;
    for (size_t k = 0; k < kinds.size(); ++k) {
      const RunKind kind = kinds[(k + static_cast<size_t>(round)) % kinds.size()];
      (kind == RunKind::kDdp ? n : kind == RunKind::kOne ? one : alone) = run_kind(o, kind);
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

void add_ddp_bench(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto child = std::make_shared<std::string>();
  auto* cmd = bench.add_subcommand(
      "ddp",
      "Samples/s of one process vs N DDP ranks vs N processes without communication, scaling "
      "efficiency, exposed comm time");
  cmd->add_option("--model", o->model, "mlp|convnet|resnet18|resnet50|gpt-mini");
  add_int_list_flag(*cmd, "--mlp-hidden", o->mlp_hidden,
                    "the MLP's hidden widths, comma-separated (default: the zoo's 256,256)");
  add_int_flag(*cmd, "--ranks", o->ranks, "ranks of the parallel run (default 2)");
  add_int_flag(*cmd, "--batch-size", o->batch, "samples per rank per step (default 32)");
  add_int_flag(*cmd, "--steps", o->steps, "timed steps (default 10)");
  add_int_flag(*cmd, "--warmup", o->warmup, "untimed steps first (default 3)");
  add_double_flag(*cmd, "--bucket-cap-mb", o->bucket_cap_mb, "DDP bucket size in MiB (default 25)");
  cmd->add_flag("--grad-as-bucket-view,!--no-grad-as-bucket-view", o->grad_as_bucket_view,
                "DDP's .grad aliases its bucket, so gradients are not copied (default on, as "
                "tandem train; PyTorch's default is off)");
  add_int_flag(*cmd, "--rounds", o->rounds,
               "rounds of the three runs (N ranks, one process, N processes without "
               "communication) in rotated order; medians reported (default 1)");
  add_child_flag(*cmd, *child);
  cmd->callback([o, child, &exit_code] {
    exit_code = child->empty() ? run(*o) : run_child(child_options(*child).get<Options>());
  });
}

}  // namespace tandem::bench
