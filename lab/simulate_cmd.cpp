// `tandem simulate`: a profile (compute, and links where the cluster takes
// them from measurement), a cluster YAML, strategies and world sizes in;
// per configuration one JSON line and a table row out, plus, on request, a
// Perfetto trace of one simulated step and a PNG of efficiency and step time
// against processes.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <array>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench/train_key_flags.h"
#include "lab/lab.h"
#include "lab/profile_compute.h"
#include "lab/scaling_plot.h"
#include "lab/simulate_run.h"
#include "lab/strategy_from_options.h"
#include "tandem/core/check.h"

namespace tandem::lab {
namespace {

struct SimulateFlags {
  std::vector<std::string> profiles;
  std::string cluster;
  std::string strategies = "ddp";
  std::string workers = "1..64";
  std::string config;
  std::string json;
  std::string trace;
  std::string plot;
  int steps = 6;
  uint64_t seed = 1;
  train::TrainConfig train;  // the strategy's keys, as `tandem train` reads them
};

// The trainer's keys that describe a strategy's cost.
constexpr std::array<std::string_view, 12> kStrategyKeys = {
    "batch-size", "bucket-cap-mb", "optimizer",     "momentum",      "servers",   "staleness",
    "sync-every", "mesh",          "micro-batches", "schedule",      "wrap-policy", "dtype"};

int run(const SimulateFlags& f, const std::vector<std::string>& given) {
  const SimulationInputs in = load_inputs(f.profiles, f.cluster);
  train::TrainConfig base = f.train;
  if (!f.config.empty()) {
    base = train::load_train_config(f.config);
    train::override_keys(base, f.train, given);
  }
  const std::vector<int> sizes = parse_world_sizes(f.workers, "simulate: --workers");
  std::unique_ptr<std::ofstream> json_file;
  std::ostream* json = nullptr;
  if (f.json == "-") {
    json = &std::cout;
  } else if (!f.json.empty()) {
    json_file = std::make_unique<std::ofstream>(f.json);
    TANDEM_CHECK(json_file->good(), "simulate: cannot write --json file '{}'", f.json);
    json = json_file.get();
  }
  // Every strategy is converted (and refused if it cannot be) before output.
  std::vector<std::pair<std::string, sim::StrategySpec>> specs;
  for (const std::string& name : split_list(f.strategies, "simulate: --strategy")) {
    specs.emplace_back(name, strategy_from_options(with_strategy(base.trainer, name), in.compute));
  }
  std::cout << fmt::format("# tandem simulate: {} (batch {} per rank) on {}\n", in.compute.model,
                           base.trainer.run.batch_size, in.cluster.name);
  std::cout << fmt::format("{:>10} {:>6} {:>11} {:>12} {:>7} {:>12} {:>11} {:>9}\n", "strategy",
                           "procs", "step_ms", "textbook_ms", "eff", "exposed_ms", "memory",
                           "goodput");
  std::vector<PlotSeries> series;
  for (const auto& [name, spec] : specs) {
    series.push_back({name, {}});
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (const std::string why = unfit_world_size(spec, sizes[i]); !why.empty()) {
        std::cout << fmt::format("# {} on {} processes: skipped, {}\n", name, sizes[i], why);
        continue;
      }
      const bool traced = !f.trace.empty() && series.size() == 1 && i + 1 == sizes.size();
      const sim::SimOptions so{
          .steps = f.steps, .seed = f.seed, .trace_path = traced ? f.trace : std::string()};
      const sim::SimResult r = sim::simulate(in.compute, in.links, in.cluster, spec, sizes[i], so);
      const bool failures = in.cluster.failures.mttf_node_s > 0;
      std::cout << fmt::format(
          "{:>10} {:>6} {:>11.2f} {:>12.2f} {:>7.3f} {:>12.2f} {:>11} {:>9}\n", name, sizes[i],
          r.step_s * 1e3, r.textbook_step_s * 1e3, r.efficiency, r.exposed_comm_s * 1e3,
          human_bytes(r.memory_bytes),
          failures ? fmt::format("{:.3f}", r.goodput_keep_survivors) : std::string("-"));
      if (json) *json << result_json(in, name, r).dump() << "\n";
      series.back().points.push_back({sizes[i], r.efficiency, r.step_s});
    }
  }
  if (!f.trace.empty()) std::cout << "# trace of one step: " << f.trace << "\n";
  if (!f.plot.empty()) {
    write_scaling_plot(f.plot,
                       fmt::format("{} (batch {} per rank) on {}", in.compute.model,
                                   base.trainer.run.batch_size, in.cluster.name),
                       series);
    std::cout << "# plot: " << f.plot << "\n";
  }
  return 0;
}

}  // namespace

void add_simulate_command(CLI::App& app, int& exit_code) {
  auto f = std::make_shared<SimulateFlags>();
  auto* cmd = app.add_subcommand(
      "simulate", "Predict step time, scaling efficiency, memory and goodput at any world size");
  cmd->add_option("--profile", f->profiles,
                  "profile JSON (repeat to merge a compute and a links profile)")
      ->required();
  cmd->add_option("--cluster", f->cluster, "cluster YAML (docs/lab.md)")->required();
  cmd->add_option("--strategy", f->strategies,
                  "comma list: none, ddp, zero1, zero2, zero3, ps, gossip, local-sgd, pipeline")
      ->capture_default_str();
  cmd->add_option("--workers", f->workers,
                  "processes: a comma list (2,3,4) or a doubling range (2..4096)")
      ->capture_default_str();
  cmd->add_option("--config", f->config, "a `tandem train` YAML config for the strategy's options");
  bench::add_train_key_flags(*cmd, f->train, kStrategyKeys);
  cmd->add_option("--json", f->json, "write JSON lines to FILE ('-': stdout)");
  cmd->add_option("--trace", f->trace,
                  "write one simulated step (first strategy, last size) as a Perfetto trace");
  cmd->add_option("--plot", f->plot, "draw efficiency and step time against processes (PNG)");
  cmd->add_option("--steps", f->steps, "steps simulated per configuration")->capture_default_str();
  cmd->add_option("--seed", f->seed, "seed of the straggler draws")->capture_default_str();
  cmd->callback([cmd, f, &exit_code] { exit_code = run(*f, bench::given_train_keys(*cmd)); });
}

}  // namespace tandem::lab
