// `tandem lab converge`: virtual workers (lab/virtual_workers.h) of each
// strategy at each N, trained to a target loss in simulated time; one JSON
// line and a table row per run, and on request a PNG of the time to the
// target and the samples read against N.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <array>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench/train_key_flags.h"
#include "lab/converge_problem.h"
#include "lab/lab.h"
#include "lab/scaling_plot.h"
#include "lab/simulate_run.h"
#include "lab/strategy_from_options.h"
#include "tandem/core/check.h"

namespace tandem::lab {
namespace {

struct ConvergeFlags {
  std::string strategies = "ddp";
  std::string workers = "1,2,4";
  double target_loss = 0;
  std::string target_on = "eval";
  int64_t max_steps = 500;
  int64_t eval_every = 10;
  int64_t eval_batches = 4;
  std::vector<std::string> profiles;
  std::string cluster;
  uint64_t sim_seed = 1;
  std::string json;
  std::string plot;
  train::TrainConfig train;
};

// The trainer's keys that shape the mathematics of a run.
constexpr std::array<std::string_view, 21> kKeys = {
    "model",    "data",           "dataset-size", "data-noise",   "batch-size",   "optimizer",
    "lr",       "momentum",       "nesterov",     "weight-decay", "warmup-steps", "lr-schedule",
    "scale-lr", "clip-grad-norm", "seed",         "dtype",        "staleness",    "tau",
    "alpha",    "sync-every",     "gossip"};

VirtualOptions options_for(const std::string& name, int workers, const ConvergeFlags& f,
                           const train::TrainerOptions& t) {
  const train::AsyncConfig& a = t.strategy.async;
  return VirtualOptions{.strategy = parse_virtual_strategy(name),
                        .workers = workers,
                        .max_steps = f.max_steps,
                        .eval_every = f.eval_every,
                        .target_loss = f.target_loss,
                        .target_on_worker0 = f.target_on == "worker0",
                        .staleness = a.staleness,
                        .tau = a.tau,
                        .alpha = a.alpha,
                        .gossip_pull = a.gossip == train::GossipMode::kPull,
                        .seed = t.run.seed,
                        .sync_every = a.sync_every,
                        .times = nullptr};
}

// The cost model of `name` at N workers (ps and easgd: one server more).
std::unique_ptr<sim::WorkerTimes> times_for(const SimulationInputs& in, const std::string& name,
                                            int workers, const train::TrainerOptions& t,
                                            uint64_t seed) {
  const bool server = name == "ps" || name == "easgd";
  train::TrainerOptions o = with_strategy(t, server ? "ps" : name);
  o.strategy.async.servers = 1;
  const sim::StrategySpec spec = strategy_from_options(o, in.compute);
  return std::make_unique<sim::WorkerTimes>(in.compute, in.links, in.cluster, spec,
                                            workers + (server ? 1 : 0), seed);
}

nlohmann::json row_json(const std::string& name, int workers, const VirtualResult& r,
                        const train::TrainerOptions& t, bool timed) {
  nlohmann::json staleness = nlohmann::json::object();
  for (const auto& [k, v] : r.staleness) staleness[std::to_string(k)] = v;
  nlohmann::json curve = nlohmann::json::array();
  for (const VirtualPoint& p : r.curve) curve.push_back({p.time_s, p.rounds, p.loss});
  return {{"lab", "converge"},
          {"strategy", name},
          {"workers", workers},
          {"model", std::string(train::name_of(t.model.kind))},
          {"batch_size", t.run.batch_size},
          {"reached", r.reached},
          {"time_s", r.time_s},
          {"time_unit", timed ? "simulated seconds" : "local steps"},
          {"steps", r.steps},
          {"samples", r.samples},
          {"final_loss", r.final_loss},
          {"staleness", staleness},
          {"curve", curve}};  // [time, rounds, evaluation loss] per evaluation
}

int run(const ConvergeFlags& f) {
  TANDEM_CHECK(f.cluster.empty() == f.profiles.empty(),
               "lab converge: give --profile and --cluster together (or neither: a local step "
               "then takes 1 unit and messages are free)");
  // The schedule (--lr-schedule, --warmup-steps) spans --max-steps local steps.
  train::TrainerOptions t = f.train.trainer;
  t.run.steps = f.max_steps;
  std::optional<SimulationInputs> in;
  if (!f.cluster.empty()) in = load_inputs(f.profiles, f.cluster);
  const std::vector<int> sizes = parse_world_sizes(f.workers, "lab converge: --workers");
  std::unique_ptr<std::ofstream> json;
  if (!f.json.empty()) {
    json = std::make_unique<std::ofstream>(f.json);
    TANDEM_CHECK(json->good(), "lab converge: cannot write --json file '{}'", f.json);
  }
  std::cout << fmt::format("# tandem lab converge: {} (batch {} per worker), target loss {}{}\n",
                           train::name_of(t.model.kind), t.run.batch_size, f.target_loss,
                           in ? " on " + in->cluster.name : std::string(", no cost model"));
  std::cout << fmt::format("{:>10} {:>7} {:>8} {:>12} {:>9} {:>10} {:>10}\n", "strategy", "workers",
                           "reached", "time", "steps", "samples", "loss");
  std::vector<PlotSeries> series;
  for (const std::string& name : split_list(f.strategies, "lab converge: --strategy")) {
    parse_virtual_strategy(name);  // refuse before running anything
    series.push_back({name, {}});
    for (int n : sizes) {
      if (name == "gossip" && n < 2) {
        std::cout << fmt::format("# gossip on {} worker: skipped, it needs a peer\n", n);
        continue;
      }
      VirtualOptions vo = options_for(name, n, f, t);
      std::unique_ptr<sim::WorkerTimes> times;
      if (in) times = times_for(*in, name, n, t, f.sim_seed);
      vo.times = times.get();
      const VirtualResult r = run_virtual_workers(problem_from_options(t, n, f.eval_batches), vo);
      std::cout << fmt::format("{:>10} {:>7} {:>8} {:>12.4g} {:>9} {:>10} {:>10.4f}\n", name, n,
                               r.reached ? "yes" : "no", r.time_s, r.steps, r.samples,
                               r.final_loss);
      if (json) *json << row_json(name, n, r, t, in.has_value()).dump() << "\n";
      if (r.reached) {
        series.back().points.push_back({n, r.time_s, static_cast<double>(r.samples)});
      }
    }
  }
  if (!f.plot.empty()) {
    write_scaling_plot(f.plot,
                       fmt::format("{} to loss {} (batch {} per worker)",
                                   train::name_of(t.model.kind), f.target_loss, t.run.batch_size),
                       series,
                       {.left = in ? "time to target (simulated s)" : "time to target (steps)",
                        .left_log = true,
                        .right = "samples to target",
                        .right_log = true,
                        .xlabel = "workers",
                        .what = "lab converge"});
    std::cout << "# plot: " << f.plot << "\n";
  }
  return 0;
}

}  // namespace

void add_converge_command(CLI::App& lab, int& exit_code) {
  auto f = std::make_shared<ConvergeFlags>();
  auto* cmd = lab.add_subcommand(
      "converge", "Virtual workers: time and samples to a target loss per strategy and N");
  cmd->add_option("--strategy", f->strategies, "comma list: ddp, ps, easgd, gossip, local-sgd")
      ->capture_default_str();
  cmd->add_option("--workers", f->workers,
                  "virtual workers: a comma list (1,2,4) or a doubling range (1..256)")
      ->capture_default_str();
  cmd->add_option("--target-loss", f->target_loss,
                  "stop at the first evaluation loss at or below this (0: run --max-steps)")
      ->capture_default_str();
  cmd->add_option("--target-on", f->target_on,
                  "eval: the test split's loss; worker0: worker 0's training loss over its last "
                  "10 steps (as `tandem bench strategies` judges rank 0)")
      ->check(CLI::IsMember({"eval", "worker0"}))
      ->capture_default_str();
  cmd->add_option("--max-steps", f->max_steps, "local steps per worker at most")
      ->capture_default_str();
  cmd->add_option("--eval-every", f->eval_every,
                  "evaluate after every this many rounds (a round: one local step per worker)")
      ->capture_default_str();
  cmd->add_option("--eval-batches", f->eval_batches, "evaluation batches of the test split")
      ->capture_default_str();
  cmd->add_option("--profile", f->profiles, "profile JSON for the cost model (repeatable)");
  cmd->add_option("--cluster", f->cluster, "cluster YAML for the cost model (docs/lab.md)");
  cmd->add_option("--sim-seed", f->sim_seed, "seed of the straggler draws")->capture_default_str();
  cmd->add_option("--json", f->json, "write JSON lines to FILE");
  cmd->add_option("--plot", f->plot, "draw time and samples to the target against N (PNG)");
  bench::add_train_key_flags(*cmd, f->train, kKeys);
  cmd->callback([f, &exit_code] { exit_code = run(*f); });
}

}  // namespace tandem::lab
