#include "bench_strategies.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "tandem/core/check.h"
#include "child_ranks.h"

namespace tandem::tools {
namespace {

namespace fs = std::filesystem;

struct Options {
  std::string model = "convnet";
  std::string data = "synthetic-mnist";
  int64_t dataset_size = 4096;
  // Noisy samples (tandem train --data-noise) so the loss falls over ~100
  // steps instead of ~10: time to a target then says something.
  double data_noise = 0.9;
  int ranks = 4;
  int64_t batch = 16;
  int64_t steps = 200;
  double lr = 0.002;
  double target_loss = 0.7;
  std::vector<std::string> strategies = {"ddp",    "ddp-backup",  "ps",
                                         "easgd",  "gossip",      "gossip-pull",
                                         "local-sgd"};
  std::string inject_delay;     // "" and no slowdown: kDefaultDelay
  std::string inject_slowdown;
  int servers = 1;
  int64_t staleness = -1;
  int64_t tau = 4;
  double alpha = 0.25;
  int64_t sync_every = 4;
  int backup_workers = 1;
  std::string out = "strategies";  // writes OUT.jsonl and OUT.csv
  int timeout_s = 600;              // per run
};

constexpr const char* kDefaultDelay = "ranks=1,ms=100";
constexpr int kSmoothing = 10;  // steps in the loss's moving average

struct Run {
  std::string strategy;  // as the bench names it (ddp-backup included)
  std::string straggler;  // "none" or the injection flags
  bool ok = false;
  std::string error;
  bool reached = false;
  double time_to_target_s = 0;
  int64_t samples_to_target = 0;
  int64_t steps_to_target = 0;  // rank 0's
  double final_loss = 0;        // smoothed, rank 0
  int64_t steps = 0;            // rank 0's
  double wall_s = 0;            // rank 0's training time
  int64_t samples = 0;          // over all workers
};

// The straggler of each strategy's second run: --inject-delay and/or
// --inject-slowdown as given, or kDefaultDelay when neither is.
std::vector<std::pair<std::string, std::string>> straggler_flags(const Options& o) {
  if (o.inject_delay.empty() && o.inject_slowdown.empty()) return {{"inject-delay", kDefaultDelay}};
  std::vector<std::pair<std::string, std::string>> flags;
  if (!o.inject_delay.empty()) flags.emplace_back("inject-delay", o.inject_delay);
  if (!o.inject_slowdown.empty()) flags.emplace_back("inject-slowdown", o.inject_slowdown);
  return flags;
}

std::vector<std::string> train_args(const Options& o, const std::string& strategy, bool slow,
                                    const fs::path& dir) {
  std::vector<std::string> a = {"tandem", "train", "--model", o.model, "--data", o.data,
                                "--dataset-size", std::to_string(o.dataset_size),
                                "--data-noise", fmt::format("{}", o.data_noise),
                                "--batch-size", std::to_string(o.batch), "--steps",
                                std::to_string(o.steps), "--lr", fmt::format("{}", o.lr),
                                "--momentum", "0.9", "--log-every", "1", "--metrics",
                                (dir / "metrics-{rank}.jsonl").string()};
  const bool backup = strategy == "ddp-backup";
  const bool pull = strategy == "gossip-pull";
  a.insert(a.end(), {"--strategy", backup ? "ddp" : pull ? "gossip" : strategy});
  if (pull) a.insert(a.end(), {"--gossip", "pull"});
  if (backup) a.insert(a.end(), {"--backup-workers", std::to_string(o.backup_workers)});
  if (backup || strategy == "ps" || strategy == "easgd") {
    a.insert(a.end(), {"--servers", std::to_string(o.servers)});
  }
  if (strategy == "ps") a.insert(a.end(), {"--staleness", std::to_string(o.staleness)});
  if (strategy == "easgd") {
    a.insert(a.end(), {"--tau", std::to_string(o.tau), "--alpha", fmt::format("{}", o.alpha)});
  }
  if (strategy == "local-sgd") a.insert(a.end(), {"--sync-every", std::to_string(o.sync_every)});
  if (slow) {
    for (const auto& [flag, value] : straggler_flags(o)) a.insert(a.end(), {"--" + flag, value});
  }
  return a;
}

struct Line {
  int64_t step = 0;
  double loss = 0;
  double elapsed = 0;
};

std::vector<Line> read_metrics(const fs::path& path) {
  std::vector<Line> lines;
  std::ifstream in(path);
  for (std::string text; std::getline(in, text);) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || j.contains("summary")) continue;
    lines.push_back({j.value("step", int64_t{0}), j.value("loss", 0.0), j.value("elapsed_s", 0.0)});
  }
  return lines;
}

// Rank 0's smoothed loss against the target; the samples of every worker
// (every rank that wrote metrics) done by then.
void measure(const Options& o, const fs::path& dir, Run& run) {
  std::vector<std::vector<Line>> ranks;
  for (int r = 0; r < o.ranks; ++r) {
    auto lines = read_metrics(dir / fmt::format("metrics-{}.jsonl", r));
    if (!lines.empty()) ranks.push_back(std::move(lines));
  }
  TANDEM_CHECK(!ranks.empty() && !ranks[0].empty(), "bench strategies: no metrics from rank 0");
  const auto& lead = ranks[0];
  double window = 0;
  for (size_t i = 0; i < lead.size(); ++i) {
    window += lead[i].loss;
    if (i >= kSmoothing) window -= lead[i - kSmoothing].loss;
    const double smoothed = window / static_cast<double>(std::min<size_t>(i + 1, kSmoothing));
    run.final_loss = smoothed;
    if (!run.reached && i + 1 >= kSmoothing && smoothed <= o.target_loss) {
      run.reached = true;
      run.time_to_target_s = lead[i].elapsed;
      run.steps_to_target = lead[i].step;
    }
  }
  run.steps = lead.back().step;
  run.wall_s = lead.back().elapsed;
  for (const auto& lines : ranks) {
    run.samples += static_cast<int64_t>(lines.size()) * o.batch;
    if (!run.reached) continue;
    for (const auto& l : lines) {
      if (l.elapsed <= run.time_to_target_s) run.samples_to_target += o.batch;
    }
  }
}

nlohmann::json to_json(const Options& o, const Run& r) {
  nlohmann::json j = {{"bench", "strategies"},
                      {"model", o.model},
                      {"ranks", o.ranks},
                      {"batch_per_rank", o.batch},
                      {"lr", o.lr},
                      {"data_noise", o.data_noise},
                      {"target_loss", o.target_loss},
                      {"strategy", r.strategy},
                      {"straggler", r.straggler},
                      {"ok", r.ok},
                      {"reached", r.reached},
                      {"time_to_target_s", r.reached ? nlohmann::json(r.time_to_target_s) : nullptr},
                      {"samples_to_target",
                       r.reached ? nlohmann::json(r.samples_to_target) : nullptr},
                      {"steps_to_target_rank0", r.reached ? nlohmann::json(r.steps_to_target) : nullptr},
                      {"final_loss_rank0", r.final_loss},
                      {"steps_rank0", r.steps},
                      {"wall_s_rank0", r.wall_s},
                      {"samples", r.samples},
                      {"ms_per_step_rank0", r.steps > 0 ? r.wall_s * 1e3 / r.steps : 0.0}};
  if (!r.ok) j["error"] = r.error;
  return j;
}

int run(const Options& o) {
  TANDEM_CHECK(o.ranks >= 2 && o.ranks <= 64, "bench strategies: --ranks must be in [2, 64] (got {})",
               o.ranks);
  TANDEM_CHECK(o.steps >= kSmoothing && o.batch >= 1 && o.timeout_s >= 1,
               "bench strategies: --steps must be >= {}, --batch-size and --timeout >= 1",
               kSmoothing);
  TANDEM_CHECK(o.target_loss > 0, "bench strategies: --target-loss must be positive");
  for (const auto& s : o.strategies) {
    TANDEM_CHECK(s == "ddp" || s == "ddp-backup" || s == "ps" || s == "easgd" || s == "gossip" ||
                     s == "gossip-pull" || s == "local-sgd",
                 "bench strategies: --strategies: '{}' is not one of ddp, ddp-backup, ps, easgd, "
                 "gossip, gossip-pull, local-sgd",
                 s);
  }
  std::vector<std::string> labels;
  for (const auto& [flag, value] : straggler_flags(o)) labels.push_back(flag + " " + value);
  const std::string straggler = fmt::format("{}", fmt::join(labels, ", "));
  std::ofstream json(o.out + ".jsonl");
  std::ofstream csv(o.out + ".csv");
  TANDEM_CHECK(json.good() && csv.good(), "bench strategies: cannot write {}.jsonl / {}.csv", o.out,
               o.out);
  csv << "strategy,straggler,ok,reached,time_to_target_s,samples_to_target,final_loss_rank0,"
         "ms_per_step_rank0,samples\n";
  std::vector<Run> runs;
  bool all_ok = true;
  for (const auto& strategy : o.strategies) {
    for (bool slow : {false, true}) {
      char tmpl[] = "/tmp/tandem-bench-strategies-XXXXXX";
      TANDEM_CHECK(mkdtemp(tmpl) != nullptr, "bench strategies: cannot create a temporary folder");
      const fs::path dir(tmpl);
      Run r;
      r.strategy = strategy;
      r.straggler = slow ? straggler : "none";
      r.error = run_child_ranks(o.ranks, train_args(o, strategy, slow, dir), dir, o.timeout_s);
      r.ok = r.error.empty();
      if (r.ok) measure(o, dir, r);
      all_ok = all_ok && r.ok;
      const nlohmann::json j = to_json(o, r);
      std::cout << j.dump() << std::endl;
      json << j.dump() << "\n";
      csv << fmt::format("{},\"{}\",{},{},{},{},{:.5f},{:.2f},{}\n", r.strategy, r.straggler, r.ok,
                         r.reached, r.reached ? fmt::format("{:.3f}", r.time_to_target_s) : "",
                         r.reached ? std::to_string(r.samples_to_target) : "", r.final_loss,
                         r.steps > 0 ? r.wall_s * 1e3 / r.steps : 0.0, r.samples);
      if (r.ok) fs::remove_all(dir);
      runs.push_back(r);
    }
  }
  std::cout << fmt::format("\n{:<11} {:<28} {:>10} {:>10} {:>10} {:>9}\n", "strategy", "straggler",
                           "to target", "samples", "ms/step", "loss end");
  for (const auto& r : runs) {
    std::cout << fmt::format("{:<11} {:<28} {:>10} {:>10} {:>10.1f} {:>9.4f}\n", r.strategy,
                             r.straggler.substr(0, 28),
                             !r.ok ? "failed" : r.reached ? fmt::format("{:.2f} s", r.time_to_target_s) : "never",
                             r.reached ? std::to_string(r.samples_to_target) : "-",
                             r.steps > 0 ? r.wall_s * 1e3 / r.steps : 0.0, r.final_loss);
  }
  std::cout << fmt::format("(target: rank 0's loss, mean of {} steps, <= {}; written: {}.jsonl, {}.csv)\n",
                           kSmoothing, o.target_loss, o.out, o.out);
  return all_ok ? 0 : 1;
}

}  // namespace

void add_bench_strategies(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto* cmd = bench.add_subcommand(
      "strategies",
      "Time and samples to a target loss for ddp, ddp with backup workers, ps, easgd, gossip "
      "(push and pull) and local-sgd, without and with a straggler");
  cmd->add_option("--model", o->model, "model of tandem train")->capture_default_str();
  cmd->add_option("--data", o->data, "data of tandem train")->capture_default_str();
  cmd->add_option("--dataset-size", o->dataset_size, "synthetic samples")->capture_default_str();
  cmd->add_option("--data-noise", o->data_noise, "synthetic data's noise in [0, 1]")
      ->capture_default_str();
  cmd->add_option("--ranks", o->ranks, "processes per run (servers included)")
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch, "samples per worker per step")->capture_default_str();
  cmd->add_option("--steps", o->steps, "steps per worker")->capture_default_str();
  cmd->add_option("--lr", o->lr, "learning rate (SGD, momentum 0.9)")->capture_default_str();
  cmd->add_option("--target-loss", o->target_loss, "rank 0's smoothed loss to reach")
      ->capture_default_str();
  cmd->add_option("--strategies", o->strategies, "comma-separated subset")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--inject-delay", o->inject_delay,
                  fmt::format("straggler of the second run of each strategy (default {})",
                              kDefaultDelay));
  cmd->add_option("--inject-slowdown", o->inject_slowdown, "straggler as a slowdown instead");
  cmd->add_option("--servers", o->servers, "ps, easgd, ddp-backup")->capture_default_str();
  cmd->add_option("--staleness", o->staleness, "ps bound (-1: none)")->capture_default_str();
  cmd->add_option("--tau", o->tau, "easgd")->capture_default_str();
  cmd->add_option("--alpha", o->alpha, "easgd")->capture_default_str();
  cmd->add_option("--sync-every", o->sync_every, "local-sgd")->capture_default_str();
  cmd->add_option("--backup-workers", o->backup_workers, "ddp-backup")->capture_default_str();
  cmd->add_option("--out", o->out, "writes OUT.jsonl and OUT.csv")->capture_default_str();
  cmd->add_option("--timeout", o->timeout_s, "seconds per run before its ranks are killed")
      ->capture_default_str();
  cmd->callback([o, &exit_code] { exit_code = run(*o); });
}

}  // namespace tandem::tools
