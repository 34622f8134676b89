#include "bench_memory.h"

#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <fmt/format.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>
#include <vector>

#include "bench_stats.h"
#include "child_ranks.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"
#include "tandem/parallel/activation_tracker.h"
#include "tandem/parallel/allocator_stats.h"
#include "tandem/train/models/models.h"
#include "tandem/train/strategy.h"

namespace tandem::tools {
namespace {

// The parent waits this long for its children (their collectives time out
// after 300 s each), then kills them.
constexpr int kChildTimeoutS = 1800;

struct Options {
  std::string model = "gpt-mini";
  std::string optimizer = "adamw";
  std::string strategies = "ddp,zero1,zero2,zero3";
  std::string ranks = "2,4";
  int64_t batch = 2;
  int steps = 3;
  int64_t gpt_width = 0;  // 0: GptMiniOptions' default
  int64_t gpt_layers = 0;
  int tracker_overhead_rounds = 0;  // > 0: also time the activation tracker's cost
  // internal: this process is one rank of one (strategy, N) run
  bool as_rank = false;
  std::string strategy;
};

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

train::ModelOptions model_options(const Options& o) {
  train::ModelOptions mo;
  if (o.gpt_width > 0) mo.gpt_mini.width = o.gpt_width;
  if (o.gpt_layers > 0) mo.gpt_mini.layers = o.gpt_layers;
  return mo;
}

// A random batch of `o.batch` inputs and targets for o.model.
std::pair<at::Tensor, at::Tensor> random_batch(const Options& o, const train::ModelOptions& mo) {
  const auto spec = train::input_spec(o.model, mo);
  at::Tensor x = spec.dtype == at::kLong
                     ? at::randint(0, spec.token_range, spec.input_shape(o.batch), at::kLong)
                     : at::randn(spec.input_shape(o.batch));
  at::Tensor y = at::randint(0, spec.classes, spec.target_batch_shape(o.batch), at::kLong);
  return {x, y};
}

void forward_backward(torch::nn::AnyModule& model, const at::Tensor& x, const at::Tensor& y) {
  at::Tensor logits = model.forward(x);
  torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}))
      .backward();
}

// One rank: count allocations from the start, build the model and the
// strategy, train a few steps, and (rank 0) print one JSON line.
int run_as_rank(const Options& o) {
  parallel::install_counting_cpu_allocator();
  // Counts the activations beside the model state, so that the accounting's
  // peak can be held against the allocator's.
  parallel::ActivationTracker activations;
  parallel::reset_peak_resident();
  auto comm =
      init({.backend = "auto", .timeout = Millis(300'000), .rendezvous_timeout = Millis(60'000)});
  const int64_t rss_base = parallel::resident_bytes();

  train::TrainerOptions to;
  to.model.kind = train::model_kind(o.model);
  to.optimizer.kind = train::parse_choice<train::OptimizerKind>(o.optimizer);
  to.strategy.kind = train::parse_choice<train::StrategyKind>(o.strategy);
  to.optimizer.lr = 1e-3;
  const train::ModelOptions mo = model_options(o);
  at::manual_seed(0);
  // Counted from here: what the process holds beyond LibTorch's and the
  // communicator's own start-up allocations.
  const int64_t alloc_base = parallel::cpu_allocator_stats().current_bytes;
  torch::nn::AnyModule model = train::make_model(o.model, mo);
  int64_t params = 0;
  for (const auto& p : model.ptr()->parameters()) params += p.numel();
  auto strategy = train::make_strategy(to, model.ptr(), comm, nullptr);
  int64_t largest_group = 0;
  if (strategy->sharded()) {
    for (const auto& g : strategy->sharded_state().groups)
      largest_group = std::max(largest_group, g.layout.numel);
  }
  // The peak is taken over the training steps (construction copies the
  // parameters into flat buffers once, a transient no step repeats).
  parallel::reset_cpu_allocator_peak();
  at::manual_seed(1 + comm->rank());
  for (int s = 0; s < o.steps; ++s) {
    const auto [x, y] = random_batch(o, mo);
    strategy->zero_grad();
    forward_backward(model, x, y);
    strategy->step();
  }
  const auto memory = strategy->memory();
  const auto alloc = parallel::cpu_allocator_stats();
  const int n = comm->size();
  const double per = static_cast<double>(params);
  // Theory, bytes per parameter with fp32 Adam (ZeRO paper, Figure 1).
  double theory = 16.0;
  double theory_peak = 16.0;
  if (to.strategy.kind == train::StrategyKind::kZero1) theory = theory_peak = 4 + 4 + 8.0 / n;
  if (to.strategy.kind == train::StrategyKind::kZero2) theory = theory_peak = 4 + 12.0 / n;
  if (to.strategy.kind == train::StrategyKind::kZero3) {
    theory = 16.0 / n;
    theory_peak = theory + 8.0 * static_cast<double>(largest_group) / per;  // one unit's params+grads
  }
  nlohmann::json j = {
      {"bench", "memory"},
      {"model", o.model},
      {"optimizer", o.optimizer},
      {"strategy", o.strategy},
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
      {"allocator_peak_bytes", alloc.peak_bytes - alloc_base},
      {"accounting_peak_over_allocator_peak",
       static_cast<double>(memory.peak_with_activations()) /
           static_cast<double>(alloc.peak_bytes - alloc_base)},
      {"rss_peak_growth_bytes", parallel::peak_resident_bytes() - rss_base}};
  if (comm->rank() == 0) {
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
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
  const auto [x, y] = random_batch(o, mo);
  auto seconds_per_step = [&](bool track) {
    std::unique_ptr<parallel::ActivationTracker> tracker;
    if (track) tracker = std::make_unique<parallel::ActivationTracker>();
    constexpr int kSteps = 5;
    const double start = thread_cpu_seconds();
    for (int s = 0; s < kSteps; ++s) forward_backward(model, x, y);
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

// Runs `ranks` children of `tandem bench memory --as-rank` and returns what
// rank 0 printed.
std::string run_children(const Options& o, const std::string& strategy, int ranks) {
  const std::vector<std::string> args = {
      "tandem",       "bench",     "memory",     "--as-rank",          "--strategy-of-rank",
      strategy,       "--model",   o.model,      "--optimizer",        o.optimizer,
      "--batch-size", std::to_string(o.batch), "--steps", std::to_string(o.steps),
      "--gpt-width",  std::to_string(o.gpt_width), "--gpt-layers", std::to_string(o.gpt_layers)};
  const auto run = tools::run_children(args, {.processes = ranks, .timeout_s = kChildTimeoutS, .log_dir = {}});
  TANDEM_CHECK(run.error.empty() && !run.output.empty(),
               "bench memory: the {} run at {} ranks failed: {}", strategy, ranks,
               run.error.empty() ? "no output" : run.error);
  return run.output.substr(0, run.output.find('\n'));
}

int run(const Options& o) {
  TANDEM_CHECK(train::find_choice<train::OptimizerKind>(o.optimizer).has_value(),
               "bench memory: --optimizer {} is not one of adamw, sgd", o.optimizer);
  TANDEM_CHECK(o.batch >= 1 && o.steps >= 1, "bench memory: --batch-size and --steps must be >= 1");
  TANDEM_CHECK(o.tracker_overhead_rounds >= 0,
               "bench memory: --tracker-overhead-rounds must be >= 0, got {}",
               o.tracker_overhead_rounds);
  train::input_spec(o.model);  // validates the name
  if (o.as_rank) return run_as_rank(o);
  std::vector<int> ranks;
  for (const auto& r : split(o.ranks)) {
    int n = 0;
    try {
      n = std::stoi(r);
    } catch (const std::exception&) {
    }
    TANDEM_CHECK(n >= 1 && n <= 16, "bench memory: --ranks {}: each entry must be in [1, 16]",
                 o.ranks);
    ranks.push_back(n);
  }
  const auto strategies = split(o.strategies);
  for (const auto& s : strategies) {
    const auto kind = train::find_choice<train::StrategyKind>(s);
    TANDEM_CHECK(kind && (*kind == train::StrategyKind::kDdp || train::is_sharded(*kind)),
                 "bench memory: --strategies: {} is not one of ddp, zero1, zero2, zero3", s);
  }
  std::cout << fmt::format("{:<7} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9} {:>10}\n",
                           "strategy", "ranks", "params", "grads", "optim", "total", "theory",
                           "ratio", "act MiB", "peak/alloc");
  std::vector<std::string> lines;
  for (int n : ranks) {
    for (const auto& s : strategies) {
      std::string line = run_children(o, s, n);
      auto j = nlohmann::json::parse(line);
      const auto& m = j["measured_bytes_per_param"];
      std::cout << fmt::format(
          "{:<7} {:>5} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f} {:>8.2f} {:>7.3f} {:>9.2f} {:>10.3f}\n",
          s, n, m["parameters"].get<double>(), m["gradients"].get<double>(),
          m["optimizer_state"].get<double>(), m["total"].get<double>(),
          j["theory_bytes_per_param"].get<double>(), j["measured_over_theory"].get<double>(),
          j["accounting_peak_activation_bytes"].get<double>() / (1024.0 * 1024.0),
          j["accounting_peak_over_allocator_peak"].get<double>());
      lines.push_back(std::move(line));
    }
  }
  std::cout << "(bytes per parameter, after a step; ratio = measured / theory; act MiB = the "
               "most live activations in one sample; peak/alloc = the "
               "accounting's peak, model state plus activations, over the counted allocator's "
               "peak)\n";
  for (const auto& l : lines) std::cout << l << "\n";
  if (o.tracker_overhead_rounds > 0) measure_tracker_overhead(o);
  return 0;
}

}  // namespace

void add_bench_memory(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto* cmd = bench.add_subcommand(
      "memory", "Model-state bytes per rank for ddp and zero1-3, beside the ZeRO theory");
  cmd->add_option("--model", o->model, "mlp|convnet|resnet18|resnet50|gpt-mini")
      ->capture_default_str();
  cmd->add_option("--optimizer", o->optimizer, "adamw|sgd")->capture_default_str();
  cmd->add_option("--strategies", o->strategies, "comma-separated")->capture_default_str();
  cmd->add_option("--ranks", o->ranks, "world sizes, comma-separated")->capture_default_str();
  cmd->add_option("--batch-size", o->batch, "samples per rank per step")->capture_default_str();
  cmd->add_option("--steps", o->steps, "training steps before measuring")->capture_default_str();
  cmd->add_option("--gpt-width", o->gpt_width, "gpt-mini width (0: the model's default, 128)");
  cmd->add_option("--gpt-layers", o->gpt_layers, "gpt-mini blocks (0: the model's default, 4)");
  cmd->add_option("--tracker-overhead-rounds", o->tracker_overhead_rounds,
                  "also time steps without and with the activation tracker, in this many "
                  "interleaved rounds (0: not)");
  cmd->add_flag("--as-rank", o->as_rank, "internal")->group("");
  cmd->add_option("--strategy-of-rank", o->strategy, "internal")->group("");
  cmd->callback([o, &exit_code] { exit_code = run(*o); });
}

}  // namespace tandem::tools
