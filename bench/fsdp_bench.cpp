// `tandem bench fsdp`: training throughput and model-state memory of N ranks
// under DistributedDataParallel and under FullyShardedDataParallel (one
// intra-op thread each, shared memory, AdamW), measured in one invocation in
// alternating rounds because the machine is shared; prints one JSON line with
// both samples/s, their ratio, each strategy's peak model state per rank and
// the load average.
#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <torch/optim/adamw.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench/child_ranks.h"
#include "bench/flag_values.h"
#include "bench/subcommands.h"
#include "bench/training_steps.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"
#include "tandem/memory/storage_set.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"
#include "tandem/parallel/optimizer_state.h"

namespace tandem::bench {
namespace {

enum class Strategy { kDdp, kFsdp };
NLOHMANN_JSON_SERIALIZE_ENUM(Strategy, {{Strategy::kDdp, "ddp"}, {Strategy::kFsdp, "fsdp"}})

struct Options {
  std::string model = "gpt-mini";
  int ranks = 2;
  int64_t batch = 8;
  int steps = 10;
  int warmup = 3;
  int rounds = 3;
  std::vector<std::string> wrap;  // module types; default per model
  bool no_prefetch = false;
  bool no_overlap = false;             // FSDP without reduce-scatter overlap
  Strategy strategy = Strategy::kDdp;  // of a child
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Options, model, ranks, batch, steps, warmup, rounds,
                                                wrap, no_prefetch, no_overlap, strategy)

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

// FSDP's peaks of each part, and the ZeRO-3 theory for its units.
void read_fsdp_memory(const parallel::FullyShardedDataParallel& fsdp, int ranks, Result& r) {
  r.state_bytes = static_cast<double>(fsdp.memory().peak_total());
  r.parameter_bytes = static_cast<double>(fsdp.memory().peak().parameters);
  r.gradient_bytes = static_cast<double>(fsdp.memory().peak().gradients);
  r.optimizer_bytes = static_cast<double>(fsdp.memory().peak().optimizer_state);
  int64_t total = 0, largest = 0;
  for (const auto& unit : fsdp.units()) {
    total += unit.layout.numel;
    largest = std::max(largest, unit.layout.numel);
  }
  r.zero3_bytes = 16.0 * static_cast<double>(total) / ranks + 8.0 * static_cast<double>(largest);
}

// Trains warmup + steps steps on one random batch; returns this rank's mean
// step time and peak model-state bytes.
Result run_steps(const Options& o, const std::shared_ptr<Communicator>& comm) {
  at::manual_seed(0);
  auto model = train::make_model(o.model);
  std::unique_ptr<parallel::DistributedDataParallel> ddp;
  std::unique_ptr<parallel::FullyShardedDataParallel> fsdp;
  std::vector<at::Tensor> params = model.ptr()->parameters();
  if (o.strategy == Strategy::kFsdp) {
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
  const Batch batch = random_batch(o.model, {}, o.batch);
  Result r;
  r.step_seconds = time_steps(model, batch,
                              {.warmup = o.warmup,
                               .steps = o.steps,
                               .zero_grad = [&] { opt.zero_grad(); },
                               .step = [&] { opt.step(); },
                               .sync = comm.get(),
                               .after_timed_step = {}});
  if (fsdp) {
    read_fsdp_memory(*fsdp, comm->size(), r);
  } else {  // replicated: every tensor is whole all the time
    r.state_bytes = static_cast<double>(
        memory::storage_bytes(params) + memory::storage_bytes(memory::gradients_of(params)) +
        memory::storage_bytes(parallel::optimizer_state_tensors(opt)));
  }
  return r;
}

// This process is one rank of a ddp or fsdp run; rank 0 reports the largest
// figures over the ranks.
int run_child(const Options& o) {
  auto comm =
      init({.backend = Backend::kAuto, .timeout = Millis(300'000), .rendezvous_timeout = Millis(60'000)});
  Result r = run_steps(o, comm);
  at::Tensor t = at::tensor(std::vector<double>{r.step_seconds, r.state_bytes, r.parameter_bytes,
                                                r.gradient_bytes, r.optimizer_bytes, r.zero3_bytes},
                            at::kDouble);
  comm->all_reduce(t, ReduceOp::kMax);
  if (comm->rank() == 0) {
    report({{"step_seconds", t[0].item<double>()},
            {"state_bytes", t[1].item<double>()},
            {"parameter_bytes", t[2].item<double>()},
            {"gradient_bytes", t[3].item<double>()},
            {"optimizer_bytes", t[4].item<double>()},
            {"zero3_bytes", t[5].item<double>()}});
  }
  return 0;
}

// One o.ranks-rank run of `strategy` (one BLAS/OpenMP thread per rank unless
// set otherwise); rank 0's line.
Result run_strategy(Options o, Strategy strategy) {
  o.strategy = strategy;
  const auto lines = run_children(fmt::format("bench fsdp: the {}-rank {} run", o.ranks,
                                              strategy == Strategy::kFsdp ? "fsdp" : "ddp"),
                                  child_args("fsdp", o), o.ranks);
  if (lines.size() != 1) {
    throw Error(
        fmt::format("bench fsdp: the children printed {} result lines, not 1", lines.size()));
  }
  const auto& j = lines[0];
  return {.step_seconds = j.at("step_seconds"),
          .state_bytes = j.at("state_bytes"),
          .parameter_bytes = j.at("parameter_bytes"),
          .gradient_bytes = j.at("gradient_bytes"),
          .optimizer_bytes = j.at("optimizer_bytes"),
          .zero3_bytes = j.at("zero3_bytes")};
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
  const std::string load_before = load_average();
  std::vector<double> ddp_sps, fsdp_sps, ratios;
  Result ddp, fsdp;
  for (int round = 0; round < o.rounds; ++round) {
    // Alternate which goes first, so that neither always meets the same load.
    if (round % 2 == 0) {
      ddp = run_strategy(o, Strategy::kDdp);
      fsdp = run_strategy(o, Strategy::kFsdp);
    } else {
      fsdp = run_strategy(o, Strategy::kFsdp);
      ddp = run_strategy(o, Strategy::kDdp);
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

void add_fsdp_bench(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto child = std::make_shared<std::string>();
  auto* cmd = bench.add_subcommand(
      "fsdp", "Samples/s and model-state bytes per rank: N DDP ranks vs N FSDP ranks");
  cmd->add_option("--model", o->model, "mlp|convnet|resnet18|resnet50|gpt-mini (default gpt-mini)");
  add_int_flag(*cmd, "--ranks", o->ranks, "ranks of each run (default 2)");
  add_int_flag(*cmd, "--batch-size", o->batch, "samples per rank per step (default 8)");
  add_int_flag(*cmd, "--steps", o->steps, "timed steps (default 10)");
  add_int_flag(*cmd, "--warmup", o->warmup, "untimed steps first (default 3)");
  add_int_flag(*cmd, "--rounds", o->rounds,
               "DDP/FSDP run pairs; the median is reported (default 3)");
  cmd->add_option("--wrap", o->wrap,
                  "module types that become FSDP units (default: GptBlockImpl for gpt-mini, "
                  "LinearImpl for mlp)");
  cmd->add_flag("--no-prefetch", o->no_prefetch, "FSDP without all-gather prefetch");
  cmd->add_flag("--no-overlap", o->no_overlap,
                "FSDP holding one unit's full gradients at a time (no reduce-scatter overlap)");
  add_child_flag(*cmd, *child);
  cmd->callback([o, child, &exit_code] {
    exit_code = child->empty() ? run(*o) : run_child(child_options(*child).get<Options>());
  });
}

}  // namespace tandem::bench
