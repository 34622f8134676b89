// `tandem bench memory`: model-state bytes per rank for ddp, zero1, zero2
// and zero3 at several world sizes, measured by the strategies' memory
// accounting, beside the ZeRO paper's theory and the process's own counts
// (LibTorch's CPU allocator, counted, and the resident set). Each rank arms
// an ActivationTracker, so the accounting's peak (model state plus live
// activations) can be held against the allocator's. With
// --tracker-overhead-rounds it also times the tracker's cost.
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench/child_ranks.h"
#include "bench/flag_values.h"
#include "bench/subcommands.h"
#include "bench/training_steps.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"
#include "tandem/memory/activation_tracker.h"
#include "tandem/memory/allocator_stats.h"
#include "tandem/train/strategy.h"

namespace tandem::bench {
namespace {

enum class Strategy { kDdp, kZero1, kZero2, kZero3 };
constexpr Choice<Strategy> kStrategies[] = {{"ddp", Strategy::kDdp},
                                            {"zero1", Strategy::kZero1},
                                            {"zero2", Strategy::kZero2},
                                            {"zero3", Strategy::kZero3}};
NLOHMANN_JSON_SERIALIZE_ENUM(Strategy, {{Strategy::kDdp, "ddp"},
                                        {Strategy::kZero1, "zero1"},
                                        {Strategy::kZero2, "zero2"},
                                        {Strategy::kZero3, "zero3"}})

enum class Optimizer { kAdamW, kSgd };
constexpr Choice<Optimizer> kOptimizers[] = {{"adamw", Optimizer::kAdamW},
                                             {"sgd", Optimizer::kSgd}};
NLOHMANN_JSON_SERIALIZE_ENUM(Optimizer, {{Optimizer::kAdamW, "adamw"}, {Optimizer::kSgd, "sgd"}})

struct Options {
  std::string model = "gpt-mini";
  Optimizer optimizer = Optimizer::kAdamW;
  std::vector<Strategy> strategies = {Strategy::kDdp, Strategy::kZero1, Strategy::kZero2,
                                      Strategy::kZero3};
  std::vector<int> ranks = {2, 4};
  int64_t batch = 2;
  int steps = 3;
  int64_t gpt_width = 0;  // 0: GptMiniOptions' default
  int64_t gpt_layers = 0;
  int tracker_overhead_rounds = 0;     // > 0: also time the activation tracker's cost
  Strategy strategy = Strategy::kDdp;  // of a child
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Options, model, optimizer, strategies, ranks, batch,
                                                steps, gpt_width, gpt_layers,
                                                tracker_overhead_rounds, strategy)

train::ModelOptions model_options(const Options& o) {
  train::ModelOptions mo;
  if (o.gpt_width > 0) mo.gpt_mini.width = o.gpt_width;
  if (o.gpt_layers > 0) mo.gpt_mini.layers = o.gpt_layers;
  return mo;
}

// The trainer's strategy of the run, as `tandem train --strategy S` builds it.
std::unique_ptr<train::Strategy> make_strategy(const Options& o, torch::nn::AnyModule& model,
                                               const std::shared_ptr<Communicator>& comm) {
  train::TrainerOptions to;
  to.model.kind = train::model_kind(o.model);
  to.optimizer.kind =
      train::parse_choice<train::OptimizerKind>(choice_name<Optimizer>(o.optimizer, kOptimizers));
  to.strategy.kind =
      train::parse_choice<train::StrategyKind>(choice_name<Strategy>(o.strategy, kStrategies));
  to.optimizer.lr = 1e-3;
  return train::make_strategy(to, model.ptr(), comm, nullptr);
}

// Bytes per parameter with fp32 Adam (ZeRO paper, Figure 1), after a step
// and at the peak (ZeRO-3 also holds one unit's parameters and gradients).
std::pair<double, double> theory_bytes(Strategy s, int n, double largest_unit_share) {
  switch (s) {
    case Strategy::kDdp:
      return {16.0, 16.0};
    case Strategy::kZero1:
      return {4 + 4 + 8.0 / n, 4 + 4 + 8.0 / n};
    case Strategy::kZero2:
      return {4 + 12.0 / n, 4 + 12.0 / n};
    case Strategy::kZero3:
      return {16.0 / n, 16.0 / n + 8.0 * largest_unit_share};
  }
  return {0, 0};
}

// What a rank measured, as the JSON line of one (strategy, N) run.
nlohmann::json memory_line(const Options& o, int n, int64_t params, int64_t largest_group,
                           const memory::MemoryAccounting& memory, int64_t allocated_peak,
                           int64_t rss_growth) {
  const double per = static_cast<double>(params);
  const auto [theory, theory_peak] =
      theory_bytes(o.strategy, n, static_cast<double>(largest_group) / per);
  return {
      {"bench", "memory"},
      {"model", o.model},
      {"optimizer", choice_name<Optimizer>(o.optimizer, kOptimizers)},
      {"strategy", choice_name<Strategy>(o.strategy, kStrategies)},
      {"ranks", n},
      {"parameters", params},
      {"batch_per_rank", o.batch},
      {"largest_unit_parameters", largest_group},
      {"measured_bytes_per_param",
       {{"parameters", memory.now().parameters / per},
        {"gradients", memory.now().gradients / per},
        {"optimizer_state", memory.now().optimizer_state / per},
        {"total", memory.now().total() / per}}},
      {"theory_bytes_per_param", theory},
      {"measured_over_theory", memory.now().total() / per / theory},
      {"peak_bytes_per_param", memory.peak_total() / per},
      {"theory_peak_bytes_per_param", theory_peak},
      {"accounting_peak_model_state_bytes", memory.peak_total()},
      {"accounting_peak_activation_bytes", memory.peak_activations()},
      {"accounting_peak_bytes", memory.peak_with_activations()},
      {"allocator_peak_bytes", allocated_peak},
      {"accounting_peak_over_allocator_peak",
       static_cast<double>(memory.peak_with_activations()) / static_cast<double>(allocated_peak)},
      {"rss_peak_growth_bytes", rss_growth}};
}

// One rank: count allocations from the start, build the model and the
// strategy, train a few steps, and (rank 0) report one JSON line.
int run_child(const Options& o) {
  memory::install_counting_cpu_allocator();
  // Counts the activations beside the model state, so that the accounting's
  // peak can be held against the allocator's.
  memory::ActivationTracker activations;
  memory::reset_peak_resident();
  auto comm =
      init({.backend = Backend::kAuto, .timeout = Millis(300'000), .rendezvous_timeout = Millis(60'000)});
  const int64_t rss_base = memory::resident_bytes();
  const train::ModelOptions mo = model_options(o);
  at::manual_seed(0);
  // Counted from here: what the process holds beyond LibTorch's and the
  // communicator's own start-up allocations.
  const int64_t alloc_base = memory::cpu_allocator_stats().current_bytes;
  torch::nn::AnyModule model = train::make_model(o.model, mo);
  int64_t params = 0;
  for (const auto& p : model.ptr()->parameters()) params += p.numel();
  auto strategy = make_strategy(o, model, comm);
  int64_t largest_group = 0;
  if (strategy->sharded()) {
    for (const auto& g : strategy->sharded_state().groups)
      largest_group = std::max(largest_group, g.layout.numel);
  }
  // The peak is taken over the training steps (construction copies the
  // parameters into flat buffers once, a transient no step repeats).
  memory::reset_cpu_allocator_peak();
  at::manual_seed(1 + comm->rank());
  for (int s = 0; s < o.steps; ++s) {
    const Batch batch = random_batch(o.model, mo, o.batch);
    strategy->zero_grad();
    forward_backward(model, batch);
    strategy->step();
  }
  const auto alloc = memory::cpu_allocator_stats();
  if (comm->rank() == 0) {
    report(memory_line(o, comm->size(), params, largest_group, strategy->memory(),
                       alloc.peak_bytes - alloc_base, memory::peak_resident_bytes() - rss_base));
  }
  comm->barrier();
  return 0;
}

double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

// The activation tracker's cost in this process, on one intra-op thread:
// rounds of 5 forward+backward steps without and with a tracker armed,
// interleaved, timed in thread CPU time (wall time on these shared machines
// varies more than the effect). Prints a line and one JSON line.
void measure_tracker_overhead(const Options& o) {
  at::set_num_threads(1);
  const train::ModelOptions mo = model_options(o);
  at::manual_seed(0);
  torch::nn::AnyModule model = train::make_model(o.model, mo);
  const Batch batch = random_batch(o.model, mo, o.batch);
  auto seconds_per_step = [&](bool track) {
    std::unique_ptr<memory::ActivationTracker> tracker;
    if (track) tracker = std::make_unique<memory::ActivationTracker>();
    constexpr int kSteps = 5;
    const double start = thread_cpu_seconds();
    for (int s = 0; s < kSteps; ++s) forward_backward(model, batch);
    return (thread_cpu_seconds() - start) / kSteps;
  };
  seconds_per_step(false);  // warm-up
  std::vector<double> off, on, ratio;
  for (int r = 0; r < o.tracker_overhead_rounds; ++r) {
    off.push_back(seconds_per_step(false));
    on.push_back(seconds_per_step(true));
    ratio.push_back(on.back() / off.back());
  }
  nlohmann::json j = {{"bench", "activation_tracker_overhead"},
                      {"model", o.model},
                      {"batch", o.batch},
                      {"rounds", o.tracker_overhead_rounds},
                      {"step_cpu_seconds_without", median(off)},
                      {"step_cpu_seconds_with", median(on)},
                      {"with_over_without", median(ratio)}};
  std::cout << fmt::format(
      "activation tracker: {} batch {}: step {:.2f} ms without, {:.2f} ms with, ratio {:.3f} "
      "(medians of {} rounds, thread CPU time)\n{}\n",
      o.model, o.batch, median(off) * 1e3, median(on) * 1e3, median(ratio),
      o.tracker_overhead_rounds, j.dump());
}

// Rank 0's line of one (strategy, N) run.
nlohmann::json run_strategy(Options o, Strategy strategy, int ranks) {
  o.strategy = strategy;
  const auto lines = run_children(fmt::format("bench memory: the {} run at {} ranks",
                                              choice_name<Strategy>(strategy, kStrategies), ranks),
                                  child_args("memory", o), ranks);
  if (lines.empty()) throw Error("bench memory: the children printed no result line");
  return lines[0];
}

void print_row(const nlohmann::json& j) {
  const auto& m = j["measured_bytes_per_param"];
  std::cout << fmt::format(
      "{:<7} {:>5} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f} {:>8.2f} {:>7.3f} {:>9.2f} {:>10.3f}\n",
      j["strategy"].get<std::string>(), j["ranks"].get<int>(), m["parameters"].get<double>(),
      m["gradients"].get<double>(), m["optimizer_state"].get<double>(), m["total"].get<double>(),
      j["theory_bytes_per_param"].get<double>(), j["measured_over_theory"].get<double>(),
      j["accounting_peak_activation_bytes"].get<double>() / (1024.0 * 1024.0),
      j["accounting_peak_over_allocator_peak"].get<double>());
}

int run(const Options& o) {
  TANDEM_CHECK(o.batch >= 1 && o.steps >= 1, "bench memory: --batch-size and --steps must be >= 1");
  TANDEM_CHECK(o.tracker_overhead_rounds >= 0,
               "bench memory: --tracker-overhead-rounds must be >= 0, got {}",
               o.tracker_overhead_rounds);
  for (int n : o.ranks) {
    TANDEM_CHECK(n >= 1 && n <= 16, "bench memory: --ranks {}: each entry must be in [1, 16]", n);
  }
  train::input_spec(o.model);  // validates the name
  std::cout << fmt::format("{:<7} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9} {:>10}\n",
                           "strategy", "ranks", "params", "grads", "optim", "total", "theory",
                           "ratio", "act MiB", "peak/alloc");
  std::vector<nlohmann::json> lines;
  for (int n : o.ranks) {
    for (Strategy s : o.strategies) {
      lines.push_back(run_strategy(o, s, n));
      print_row(lines.back());
    }
  }
  std::cout << "(bytes per parameter, after a step; ratio = measured / theory; act MiB = the "
               "most live activations in one sample; peak/alloc = the "
               "accounting's peak, model state plus activations, over the counted allocator's "
               "peak)\n";
  for (const auto& l : lines) std::cout << l.dump() << "\n";
  if (o.tracker_overhead_rounds > 0) measure_tracker_overhead(o);
  return 0;
}

}  // namespace

void add_memory_bench(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto child = std::make_shared<std::string>();
  auto* cmd = bench.add_subcommand(
      "memory", "Model-state bytes per rank for ddp and zero1-3, beside the ZeRO theory");
  cmd->add_option("--model", o->model, "mlp|convnet|resnet18|resnet50|gpt-mini")
      ->capture_default_str();
  add_choice_flag<Optimizer>(*cmd, "--optimizer", o->optimizer, kOptimizers, "adamw|sgd");
  add_choice_list_flag<Strategy>(*cmd, "--strategies", o->strategies, kStrategies,
                                 "comma-separated");
  add_int_list_flag(*cmd, "--ranks", o->ranks,
                    "world sizes, comma-separated (\"\": none, e.g. to time the tracker alone)",
                    EmptyList::kAllowed);
  add_int_flag(*cmd, "--batch-size", o->batch, "samples per rank per step");
  add_int_flag(*cmd, "--steps", o->steps, "training steps before measuring");
  add_int_flag(*cmd, "--gpt-width", o->gpt_width, "gpt-mini width (0: the model's default, 128)");
  add_int_flag(*cmd, "--gpt-layers", o->gpt_layers, "gpt-mini blocks (0: the model's default, 4)");
  add_int_flag(*cmd, "--tracker-overhead-rounds", o->tracker_overhead_rounds,
               "also time steps without and with the activation tracker, in this many "
               "interleaved rounds (0: not)");
  add_child_flag(*cmd, *child);
  cmd->callback([o, child, &exit_code] {
    exit_code = child->empty() ? run(*o) : run_child(child_options(*child).get<Options>());
  });
}

}  // namespace tandem::bench
