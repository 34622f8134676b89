// `tandem plan`: a profile and a cluster in; the configurations ranked by
// predicted throughput (lab/plan.h), a table and JSON lines out, and a
// recommendation in one paragraph.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <array>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench/train_key_flags.h"
#include "lab/lab.h"
#include "lab/plan.h"
#include "tandem/core/check.h"

namespace tandem::lab {
namespace {

struct PlanFlags {
  std::vector<std::string> profiles;
  std::string cluster;
  PlanOptions options;
  std::string json;
  train::TrainConfig train;
};

constexpr std::array<std::string_view, 5> kKeys = {"batch-size", "bucket-cap-mb", "optimizer",
                                                   "momentum", "dtype"};

int run(const PlanFlags& f) {
  const SimulationInputs in = load_inputs(f.profiles, f.cluster);
  const Plan plan = make_plan(in, f.train.trainer, f.options);
  std::unique_ptr<std::ofstream> json;
  if (!f.json.empty()) {
    json = std::make_unique<std::ofstream>(f.json);
    TANDEM_CHECK(json->good(), "plan: cannot write --json file '{}'", f.json);
  }
  std::cout << fmt::format("# tandem plan: {} (batch {} per replica) on {} devices of {}\n",
                           in.compute.model, f.train.trainer.run.batch_size, f.options.workers,
                           in.cluster.name);
  std::cout << fmt::format("{:>4} {:>10} {:>28} {:>6} {:>11} {:>11} {:>11} {:>8}\n", "rank",
                           "strategy", "layout", "sync", "eff_samp/s", "step_ms", "memory",
                           "goodput");
  int shown = 0;
  for (const PlanRow& r : plan.rows) {
    if (json) {
      *json << nlohmann::json{{"lab", "plan"},
                              {"strategy", r.strategy},
                              {"layout", r.layout},
                              {"synchronous", r.synchronous},
                              {"fits", r.fits},
                              {"samples_per_s", r.result.samples_per_s},
                              {"effective_samples_per_s", r.effective_samples_per_s},
                              {"step_s", r.result.step_s},
                              {"memory_bytes", r.result.memory_bytes},
                              {"goodput", r.result.goodput_keep_survivors},
                              {"checkpoint_interval_s", r.result.checkpoint_interval_s}}
                   .dump()
            << "\n";
    }
    if (shown++ >= f.options.top) continue;
    std::cout << fmt::format("{:>4} {:>10} {:>28} {:>6} {:>11.1f} {:>11.2f} {:>11} {:>8.3f}{}\n",
                             shown, r.strategy, r.layout, r.synchronous ? "yes" : "no",
                             r.effective_samples_per_s, r.result.step_s * 1e3,
                             human_bytes(r.result.memory_bytes), r.result.goodput_keep_survivors,
                             r.fits ? "" : "  (does not fit)");
  }
  std::cout << "\n" << plan.recommendation << "\n";
  return 0;
}

}  // namespace

void add_plan_command(CLI::App& app, int& exit_code) {
  auto f = std::make_shared<PlanFlags>();
  auto* cmd = app.add_subcommand(
      "plan", "Rank the configurations a job could use on a cluster, by predicted throughput");
  cmd->add_option("--profile", f->profiles,
                  "profile JSON (repeat to merge a compute and a links profile)")
      ->required();
  cmd->add_option("--cluster", f->cluster, "cluster YAML (docs/lab.md)")->required();
  cmd->add_option("--workers", f->options.workers, "devices (processes) of the job")
      ->capture_default_str();
  cmd->add_option("--device-memory", f->options.device_memory,
                  "bytes per device; configurations needing more are set apart (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--mttf", f->options.mttf_hours,
                  "mean time to failure per node in hours (overrides the cluster's)")
      ->capture_default_str();
  cmd->add_option("--top", f->options.top, "rows printed")->capture_default_str();
  cmd->add_option("--json", f->json, "every configuration as JSON lines");
  bench::add_train_key_flags(*cmd, f->train, kKeys);
  cmd->callback([f, &exit_code] { exit_code = run(*f); });
}

}  // namespace tandem::lab
