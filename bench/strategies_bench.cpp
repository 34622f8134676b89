// `tandem bench strategies`: the synchronous and asynchronous strategies
// (ddp, ddp with backup workers, ps, easgd, gossip push and pull, local-sgd)
// train the same model on the same data, each without and with an injected
// straggler; for each run, the time and the number of samples (over all
// workers) until rank 0's loss, smoothed over 10 steps, reaches a target.
// The runs are `tandem train` jobs started as child ranks; their --metrics
// files are read back. Writes one JSON line per run and a CSV, and prints a
// table.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <stdlib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench/child_ranks.h"
#include "bench/flag_values.h"
#include "bench/subcommands.h"
#include "tandem/core/check.h"

namespace tandem::bench {
namespace {

namespace fs = std::filesystem;

enum class Strategy { kDdp, kDdpBackup, kPs, kEasgd, kGossip, kGossipPull, kLocalSgd };
constexpr Choice<Strategy> kStrategies[] = {{"ddp", Strategy::kDdp},
                                            {"ddp-backup", Strategy::kDdpBackup},
                                            {"ps", Strategy::kPs},
                                            {"easgd", Strategy::kEasgd},
                                            {"gossip", Strategy::kGossip},
                                            {"gossip-pull", Strategy::kGossipPull},
                                            {"local-sgd", Strategy::kLocalSgd}};

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
  std::vector<Strategy> strategies = {
      Strategy::kDdp,    Strategy::kDdpBackup,  Strategy::kPs,      Strategy::kEasgd,
      Strategy::kGossip, Strategy::kGossipPull, Strategy::kLocalSgd};
  std::string inject_delay;  // "" and no slowdown: kDefaultDelay
  std::string inject_slowdown;
  int servers = 1;
  int64_t staleness = -1;
  int64_t tau = 4;
  double alpha = 0.25;
  int64_t sync_every = 4;
  int backup_workers = 1;
  std::string out = "strategies";  // writes OUT.jsonl and OUT.csv
  int timeout_s = 600;             // per run
};

constexpr const char* kDefaultDelay = "ranks=1,ms=100";
constexpr int kSmoothing = 10;  // steps in the loss's moving average

struct Run {
  Strategy strategy = Strategy::kDdp;
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

// `tandem train --strategy S` and the flags of S.
std::vector<std::string> strategy_args(const Options& o, Strategy s) {
  switch (s) {
    case Strategy::kDdp:
      return {"--strategy", "ddp"};
    case Strategy::kDdpBackup:
      return {"--strategy",       "ddp",
              "--backup-workers", std::to_string(o.backup_workers),
              "--servers",        std::to_string(o.servers)};
    case Strategy::kPs:
      return {"--strategy",  "ps",
              "--servers",   std::to_string(o.servers),
              "--staleness", std::to_string(o.staleness)};
    case Strategy::kEasgd:
      return {"--strategy", "easgd",
              "--servers",  std::to_string(o.servers),
              "--tau",      std::to_string(o.tau),
              "--alpha",    fmt::format("{}", o.alpha)};
    case Strategy::kGossip:
      return {"--strategy", "gossip"};
    case Strategy::kGossipPull:
      return {"--strategy", "gossip", "--gossip", "pull"};
    case Strategy::kLocalSgd:
      return {"--strategy", "local-sgd", "--sync-every", std::to_string(o.sync_every)};
  }
  return {};
}

std::vector<std::string> train_args(const Options& o, Strategy strategy, bool slow,
                                    const fs::path& dir) {
  std::vector<std::string> a = {"train",
                                "--model",
                                o.model,
                                "--data",
                                o.data,
                                "--dataset-size",
                                std::to_string(o.dataset_size),
                                "--data-noise",
                                fmt::format("{}", o.data_noise),
                                "--batch-size",
                                std::to_string(o.batch),
                                "--steps",
                                std::to_string(o.steps),
                                "--lr",
                                fmt::format("{}", o.lr),
                                "--momentum",
                                "0.9",
                                "--log-every",
                                "1",
                                "--metrics",
                                (dir / "metrics-{rank}.jsonl").string()};
  for (auto& arg : strategy_args(o, strategy)) a.push_back(std::move(arg));
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

double ms_per_step(const Run& r) { return r.steps > 0 ? r.wall_s * 1e3 / r.steps : 0.0; }

nlohmann::json to_json(const Options& o, const Run& r) {
  auto if_reached = [&](const nlohmann::json& v) { return r.reached ? v : nlohmann::json(); };
  nlohmann::json j = {{"bench", "strategies"},
                      {"model", o.model},
                      {"ranks", o.ranks},
                      {"batch_per_rank", o.batch},
                      {"lr", o.lr},
                      {"data_noise", o.data_noise},
                      {"target_loss", o.target_loss},
                      {"strategy", choice_name<Strategy>(r.strategy, kStrategies)},
                      {"straggler", r.straggler},
                      {"ok", r.ok},
                      {"reached", r.reached},
                      {"time_to_target_s", if_reached(r.time_to_target_s)},
                      {"samples_to_target", if_reached(r.samples_to_target)},
                      {"steps_to_target_rank0", if_reached(r.steps_to_target)},
                      {"final_loss_rank0", r.final_loss},
                      {"steps_rank0", r.steps},
                      {"wall_s_rank0", r.wall_s},
                      {"samples", r.samples},
                      {"ms_per_step_rank0", ms_per_step(r)}};
  if (!r.ok) j["error"] = r.error;
  return j;
}

// One `tandem train` job of `strategy` in a fresh folder (kept when it fails).
Run run_one(const Options& o, Strategy strategy, bool slow, const std::string& straggler) {
  char tmpl[] = "/tmp/tandem-bench-strategies-XXXXXX";
  TANDEM_CHECK(mkdtemp(tmpl) != nullptr, "bench strategies: cannot create a temporary folder");
  const fs::path dir(tmpl);
  Run r;
  r.strategy = strategy;
  r.straggler = slow ? straggler : "none";
  try {
    run_children(
        fmt::format("bench strategies: the {} run", choice_name<Strategy>(strategy, kStrategies)),
        train_args(o, strategy, slow, dir), o.ranks,
        {.independent = false,
         .timeout = std::chrono::seconds(o.timeout_s),
         .log_file = dir / "output.log"});
    r.ok = true;
  } catch (const Error& e) {
    r.error = e.what();
  }
  if (r.ok) measure(o, dir, r);
  if (r.ok) fs::remove_all(dir);
  return r;
}

void print_table(const Options& o, const std::vector<Run>& runs) {
  std::cout << fmt::format("\n{:<11} {:<28} {:>10} {:>10} {:>10} {:>9}\n", "strategy", "straggler",
                           "to target", "samples", "ms/step", "loss end");
  for (const auto& r : runs) {
    const std::string to_target = !r.ok       ? "failed"
                                  : r.reached ? fmt::format("{:.2f} s", r.time_to_target_s)
                                              : "never";
    std::cout << fmt::format(
        "{:<11} {:<28} {:>10} {:>10} {:>10.1f} {:>9.4f}\n",
        choice_name<Strategy>(r.strategy, kStrategies), r.straggler.substr(0, 28), to_target,
        r.reached ? std::to_string(r.samples_to_target) : "-", ms_per_step(r), r.final_loss);
  }
  std::cout << fmt::format(
      "(target: rank 0's loss, mean of {} steps, <= {}; written: {}.jsonl, {}.csv)\n", kSmoothing,
      o.target_loss, o.out, o.out);
}

int run(const Options& o) {
  TANDEM_CHECK(o.ranks >= 2 && o.ranks <= 64,
               "bench strategies: --ranks must be in [2, 64] (got {})", o.ranks);
  TANDEM_CHECK(o.steps >= kSmoothing && o.batch >= 1 && o.timeout_s >= 1,
               "bench strategies: --steps must be >= {}, --batch-size and --timeout >= 1",
               kSmoothing);
  TANDEM_CHECK(o.target_loss > 0, "bench strategies: --target-loss must be positive");
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
  for (Strategy strategy : o.strategies) {
    for (bool slow : {false, true}) {
      const Run& r = runs.emplace_back(run_one(o, strategy, slow, straggler));
      const nlohmann::json j = to_json(o, r);
      std::cout << j.dump() << std::endl;
      json << j.dump() << "\n";
      csv << fmt::format("{},\"{}\",{},{},{},{},{:.5f},{:.2f},{}\n",
                         choice_name<Strategy>(r.strategy, kStrategies), r.straggler, r.ok,
                         r.reached, r.reached ? fmt::format("{:.3f}", r.time_to_target_s) : "",
                         r.reached ? std::to_string(r.samples_to_target) : "", r.final_loss,
                         ms_per_step(r), r.samples);
    }
  }
  print_table(o, runs);
  const bool all_ok = std::all_of(runs.begin(), runs.end(), [](const Run& r) { return r.ok; });
  return all_ok ? 0 : 1;
}

}  // namespace

void add_strategies_bench(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto* cmd = bench.add_subcommand(
      "strategies",
      "Time and samples to a target loss for ddp, ddp with backup workers, ps, easgd, gossip "
      "(push and pull) and local-sgd, without and with a straggler");
  cmd->add_option("--model", o->model, "model of tandem train")->capture_default_str();
  cmd->add_option("--data", o->data, "data of tandem train")->capture_default_str();
  add_int_flag(*cmd, "--dataset-size", o->dataset_size, "synthetic samples");
  add_double_flag(*cmd, "--data-noise", o->data_noise, "synthetic data's noise in [0, 1]");
  add_int_flag(*cmd, "--ranks", o->ranks, "processes per run (servers included)");
  add_int_flag(*cmd, "--batch-size", o->batch, "samples per worker per step");
  add_int_flag(*cmd, "--steps", o->steps, "steps per worker");
  add_double_flag(*cmd, "--lr", o->lr, "learning rate (SGD, momentum 0.9)");
  add_double_flag(*cmd, "--target-loss", o->target_loss, "rank 0's smoothed loss to reach");
  add_choice_list_flag<Strategy>(*cmd, "--strategies", o->strategies, kStrategies,
                                 "comma-separated subset");
  cmd->add_option(
      "--inject-delay", o->inject_delay,
      fmt::format("straggler of the second run of each strategy (default {})", kDefaultDelay));
  cmd->add_option("--inject-slowdown", o->inject_slowdown, "straggler as a slowdown instead");
  add_int_flag(*cmd, "--servers", o->servers, "ps, easgd, ddp-backup");
  add_int_flag(*cmd, "--staleness", o->staleness, "ps bound (-1: none)");
  add_int_flag(*cmd, "--tau", o->tau, "easgd");
  add_double_flag(*cmd, "--alpha", o->alpha, "easgd");
  add_int_flag(*cmd, "--sync-every", o->sync_every, "local-sgd");
  add_int_flag(*cmd, "--backup-workers", o->backup_workers, "ddp-backup");
  cmd->add_option("--out", o->out, "writes OUT.jsonl and OUT.csv")->capture_default_str();
  add_int_flag(*cmd, "--timeout", o->timeout_s, "seconds per run before its ranks are killed");
  cmd->callback([o, &exit_code] { exit_code = run(*o); });
}

}  // namespace tandem::bench
