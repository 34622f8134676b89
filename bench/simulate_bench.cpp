// `tandem bench simulate`: how long the simulator takes to predict one
// configuration, at world sizes up to thousands (the scaling lab's speed
// target: ResNet-50 DDP at 4096 processes in under 10 s on this machine).
// Reads a profile (`tandem profile --model resnet50 ...`) and a cluster
// YAML, times sim::simulate per size over a few rounds, and prints one JSON
// line per size with the median wall time beside the predicted step.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench/flag_values.h"
#include "bench/subcommands.h"
#include "tandem/core/check.h"
#include "tandem/sim/step_simulator.h"

namespace tandem::bench {
namespace {

constexpr Choice<sim::SimStrategy> kStrategies[] = {
    {"ddp", sim::SimStrategy::kDdp},       {"zero1", sim::SimStrategy::kZero1},
    {"zero2", sim::SimStrategy::kZero2},   {"zero3", sim::SimStrategy::kZero3},
    {"ps", sim::SimStrategy::kPs},         {"gossip", sim::SimStrategy::kGossip},
    {"local-sgd", sim::SimStrategy::kLocalSgd}};

struct Options {
  std::vector<std::string> profiles;
  std::string cluster;
  std::vector<sim::SimStrategy> strategies = {sim::SimStrategy::kDdp};
  std::vector<int> workers = {4096};
  int rounds = 3;
  int steps = 6;
};

int run(const Options& o) {
  TANDEM_CHECK(o.rounds >= 1, "bench simulate: --rounds must be >= 1 (got {})", o.rounds);
  sim::Profile profile;
  for (const auto& path : o.profiles) profile = sim::merge_profiles(profile, sim::read_profile(path));
  TANDEM_CHECK(profile.compute.has_value(), "bench simulate: no --profile has a compute part");
  const sim::ClusterSpec cluster = sim::read_cluster(o.cluster);
  std::cout << fmt::format("# tandem bench simulate: {} on {}, median of {} rounds\n",
                           profile.compute->model, cluster.name, o.rounds);
  std::cout << fmt::format("{:>10} {:>7} {:>10} {:>12}\n", "strategy", "procs", "wall_s",
                           "step_ms");
  for (sim::SimStrategy kind : o.strategies) {
    sim::StrategySpec spec;
    spec.kind = kind;
    for (int n : o.workers) {
      std::vector<double> walls;
      sim::SimResult r;
      for (int round = 0; round < o.rounds; ++round) {
        const auto start = std::chrono::steady_clock::now();
        r = sim::simulate(*profile.compute, profile.links, cluster, spec, n, {.steps = o.steps});
        walls.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
      std::sort(walls.begin(), walls.end());
      const double wall = walls[walls.size() / 2];
      std::cout << fmt::format("{:>10} {:>7} {:>10.3f} {:>12.2f}\n", sim::name_of(kind), n, wall,
                               r.step_s * 1e3);
      std::cout << nlohmann::json{{"bench", "simulate"},
                                  {"model", profile.compute->model},
                                  {"strategy", std::string(sim::name_of(kind))},
                                  {"processes", n},
                                  {"layers", profile.compute->layers.size()},
                                  {"steps", o.steps},
                                  {"wall_s", wall},
                                  {"step_s", r.step_s}}
                       .dump()
                << "\n";
    }
  }
  return 0;
}

}  // namespace

void add_simulate_bench(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto* cmd = bench.add_subcommand("simulate", "Time the simulator at large world sizes");
  cmd->add_option("--profile", o->profiles, "profile JSON (repeatable)")->required();
  cmd->add_option("--cluster", o->cluster, "cluster YAML")->required();
  add_choice_list_flag<sim::SimStrategy>(*cmd, "--strategy", o->strategies, kStrategies,
                                         "ddp|zero1|zero2|zero3|ps|gossip|local-sgd (repeatable)");
  add_int_list_flag(*cmd, "--workers", o->workers, "processes to simulate (default 4096)");
  add_int_flag(*cmd, "--rounds", o->rounds, "timed repetitions; the median counts (default 3)");
  add_int_flag(*cmd, "--steps", o->steps, "steps simulated per configuration (default 6)");
  cmd->callback([o, &exit_code] { exit_code = run(*o); });
}

}  // namespace tandem::bench
