// `tandem bench elastic`: what one dead worker costs. For each model and
// world size, two `tandem-run ... -- tandem train` jobs lose the same worker
// (SIGKILL) right after the same step:
//   - elastic: tandem-run --min-workers 1; the survivors redo the step on
//     one rank fewer (docs/elastic.md);
//   - restart-all: tandem-run --max-restarts 1 with --checkpoint-every and
//     --resume; every worker restarts from the last checkpoint on disk.
// From the jobs' --metrics lines (each has the wall-clock unix_ms), it
// reports the time from the kill to the first completed step after it, split
// for the elastic path into detection, membership, state recovery and the
// redone step, and the seconds lost per failure: from the kill until the job
// is one step past where it was, less one step. One JSON line per run, then
// a table with the ratio of the two paths' losses.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "bench/flag_values.h"
#include "bench/subcommands.h"
#include "tandem/core/check.h"
#include "tandem/launch/child_processes.h"
#include "tandem/launch/launcher.h"

namespace tandem::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

enum class Path { kElastic, kRestartAll };
constexpr Choice<Path> kPaths[] = {{"elastic", Path::kElastic}, {"restart-all", Path::kRestartAll}};

struct Options {
  std::vector<std::string> models = {"mlp", "gpt-mini"};
  std::vector<int> ranks = {2, 3, 4};
  std::vector<Path> paths = {Path::kElastic, Path::kRestartAll};
  int64_t kill_after = 15;  // the victim is killed once it has logged this step
  int64_t steps = 30;
  int64_t checkpoint_every = 10;
  int64_t batch = 8;
  int victim = -1;  // -1: the last rank
  std::string launcher;
  std::string dir;              // "": a fresh folder under /tmp, removed afterwards
  std::string out = "elastic";  // writes OUT.jsonl
  int timeout_s = 600;          // per job
};

struct Result {
  std::string model;
  int ranks = 0;
  Path path = Path::kElastic;
  int victim = 0;
  bool ok = false;
  std::string error;
  double step_s = 0;  // median step time before the kill
  double detect_s = 0, membership_s = 0, state_s = 0, redone_step_s = 0;  // elastic only
  int64_t steps_redone = 0;
  int64_t resumed_from = 0;  // the step the run went on from
  double kill_to_first_step_s = 0;
  double lost_s = 0;
};

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<nlohmann::json> read_lines(const fs::path& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    try {
      out.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception&) {
    }
  }
  return out;
}

bool is_step(const nlohmann::json& l) {
  return l.contains("step") && l.contains("unix_ms") && !l.contains("membership_change");
}

std::string launcher_path(const Options& o) {
  if (!o.launcher.empty()) return o.launcher;
  return (fs::read_symlink("/proc/self/exe").parent_path() / "tandem-run").string();
}

std::vector<std::string> train_args(const Options& o, const std::string& model, const fs::path& run,
                                    Path path) {
  std::vector<std::string> a = {"train",
                                "--model",
                                model,
                                "--steps",
                                std::to_string(o.steps),
                                "--batch-size",
                                std::to_string(o.batch),
                                "--dataset-size",
                                "4096",
                                "--log-every",
                                "1",
                                "--metrics",
                                (run / "metrics-{rank}.jsonl").string()};
  if (model == "gpt-mini") a.insert(a.end(), {"--data", "synthetic-tokens"});
  if (path == Path::kRestartAll) {
    a.insert(a.end(), {"--checkpoint-dir", (run / "ckpt").string(), "--checkpoint-every",
                       std::to_string(o.checkpoint_every), "--resume"});
  }
  return a;
}

// Runs one job, kills the victim after its step o.kill_after, and reads the
// survivors' metrics back.
Result run_one(const Options& o, const std::string& model, int ranks, Path path,
               const fs::path& root) {
  Result r;
  r.model = model;
  r.ranks = ranks;
  r.path = path;
  r.victim = o.victim < 0 ? ranks - 1 : o.victim;
  const fs::path run =
      root / fmt::format("{}-{}-{}", model, ranks, choice_name<Path>(path, kPaths));
  fs::remove_all(run);
  fs::create_directories(run);
  const std::string tandem = fs::read_symlink("/proc/self/exe").string();
  std::vector<std::string> argv = {launcher_path(o), "--nproc-per-node", std::to_string(ranks),
                                   "--grace-period", "2"};
  if (path == Path::kElastic) {
    argv.insert(argv.end(), {"--min-workers", "1", "--max-restarts", "0"});
  } else {
    argv.insert(argv.end(), {"--max-restarts", "1"});
  }
  argv.push_back("--");
  argv.push_back(tandem);
  const auto train = train_args(o, model, run, path);
  argv.insert(argv.end(), train.begin(), train.end());

  std::ofstream log(run / "output.log");
  launch::ChildOptions co;
  co.keep_output_bytes = 64 << 10;
  co.on_data = [&log](size_t, launch::Stream, std::string_view data) { log << data; };
  launch::ChildProcesses job(co);
  std::vector<std::string> env = launch::environment_with(
      launch::current_environment(), {"OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1"});
  job.start_program(0, argv[0], argv, env);
  const auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  const fs::path victim_metrics = run / fmt::format("metrics-{}.jsonl", r.victim);
  // Under elastic the metrics carry the worker id, which is the launcher rank.
  const std::string victim_env = path == Path::kElastic
                                     ? fmt::format("TANDEM_WORKER_ID={}", r.victim)
                                     : fmt::format("RANK={}", r.victim);
  int64_t kill_ms = 0;
  while (Clock::now() < deadline && !job.all_exited()) {
    job.poll(Millis(10));
    int64_t reached = 0;
    for (const auto& l : read_lines(victim_metrics)) {
      if (is_step(l)) reached = std::max(reached, l["step"].get<int64_t>());
    }
    if (reached < o.kill_after) continue;
    const auto pid = launch::find_child_with_env(job.results()[0].pid, victim_env);
    if (!pid) continue;
    kill_ms = unix_ms_now();
    ::kill(*pid, SIGKILL);
    break;
  }
  const launch::ChildResult& done = job.wait(deadline)[0];
  log.flush();
  if (kill_ms == 0) {
    r.error = fmt::format("the victim never reached step {} ({})", o.kill_after, done.how());
    return r;
  }
  if (!done.ok()) {
    r.error = fmt::format("the job failed ({}); its output: {}", done.how(),
                          (run / "output.log").string());
    return r;
  }
  // A survivor's lines: any rank but the victim (under restart-all every
  // rank restarts and appends to its own file).
  const int witness = r.victim == 0 ? 1 : 0;
  const auto lines = read_lines(run / fmt::format("metrics-{}.jsonl", witness));
  // The lines after the failure: under elastic those after the membership
  // change, under restart-all those of the restarted process (its elapsed_s
  // starts again).
  std::vector<double> before;  // step times before the kill
  int64_t last_ms = 0;
  double last_elapsed = 0;
  bool restarted = false;
  std::optional<nlohmann::json> change;
  std::optional<int64_t> first_after, back_at;
  for (const auto& l : lines) {
    if (l.contains("membership_change") && !change && l["cause"].value("cause", "") == "failure") {
      change = l;
      restarted = path == Path::kElastic;
    }
    if (!is_step(l)) continue;
    const int64_t ms = l["unix_ms"].get<int64_t>();
    const int64_t step = l["step"].get<int64_t>();
    const double elapsed = l.value("elapsed_s", 0.0);
    if (path == Path::kRestartAll && ms >= kill_ms && elapsed < last_elapsed) restarted = true;
    last_elapsed = elapsed;
    if (!restarted) {
      if (last_ms > 0 && step > 2 && ms < kill_ms) {
        before.push_back(static_cast<double>(ms - last_ms) / 1e3);
      }
      last_ms = ms;
      continue;
    }
    if (!first_after) {
      first_after = ms;
      r.resumed_from = step - 1;
    }
    if (!back_at && step >= o.kill_after + 1) back_at = ms;
  }
  if (before.empty() || !first_after || !back_at) {
    r.error = fmt::format("rank {}'s metrics lack the steps around the kill", witness);
    return r;
  }
  std::nth_element(before.begin(), before.begin() + before.size() / 2, before.end());
  r.step_s = before[before.size() / 2];
  r.kill_to_first_step_s = static_cast<double>(*first_after - kill_ms) / 1e3;
  r.lost_s = std::max(0.0, static_cast<double>(*back_at - kill_ms) / 1e3 - r.step_s);
  if (path == Path::kElastic) {
    if (!change) {
      r.error = fmt::format("rank {} logged no membership change", witness);
      return r;
    }
    const auto& c = *change;
    r.detect_s = static_cast<double>(c["seen_unix_ms"].get<int64_t>() - kill_ms) / 1e3;
    r.membership_s = c["membership_s"].get<double>();
    r.state_s = c["state_s"].get<double>();
    r.steps_redone = c["steps_redone"].get<int64_t>();
    r.redone_step_s =
        r.kill_to_first_step_s - std::max(r.detect_s, 0.0) - c["recovery_s"].get<double>();
  } else {
    r.steps_redone = o.kill_after - r.resumed_from;
  }
  r.ok = true;
  return r;
}

nlohmann::json to_json(const Options& o, const Result& r) {
  nlohmann::json j = {{"bench", "elastic"},
                      {"model", r.model},
                      {"ranks", r.ranks},
                      {"path", choice_name<Path>(r.path, kPaths)},
                      {"killed_rank", r.victim},
                      {"kill_after_step", o.kill_after},
                      {"ok", r.ok}};
  if (!r.ok) {
    j["error"] = r.error;
    return j;
  }
  j.update({{"step_s", r.step_s},
            {"kill_to_first_step_s", r.kill_to_first_step_s},
            {"lost_s", r.lost_s},
            {"steps_redone", r.steps_redone},
            {"resumed_from_step", r.resumed_from}});
  if (r.path == Path::kElastic) {
    j.update({{"detect_s", r.detect_s},
              {"membership_s", r.membership_s},
              {"state_s", r.state_s},
              {"redone_step_s", r.redone_step_s},
              {"recovery_s", r.kill_to_first_step_s - r.detect_s}});
  } else {
    j["checkpoint_every"] = o.checkpoint_every;
  }
  return j;
}

std::string seconds_or_dash(bool ok, double s) { return ok ? fmt::format("{:.2f}", s) : "-"; }

void print_table(const std::vector<Result>& results) {
  std::cout << fmt::format("\n{:<9} {:>5} {:<12} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7}\n",
                           "model", "ranks", "path", "step", "detect", "member", "state", "redone",
                           "to step", "lost", "ratio");
  for (const auto& r : results) {
    const bool elastic = r.path == Path::kElastic;
    std::string ratio = "-";
    if (elastic && r.ok) {
      for (const auto& other : results) {
        if (other.path == Path::kRestartAll && other.ok && other.model == r.model &&
            other.ranks == r.ranks && r.lost_s > 0) {
          ratio = fmt::format("{:.1f}x", other.lost_s / r.lost_s);
        }
      }
    }
    std::cout << fmt::format(
        "{:<9} {:>5} {:<12} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7}\n", r.model, r.ranks,
        choice_name<Path>(r.path, kPaths), seconds_or_dash(r.ok, r.step_s),
        seconds_or_dash(r.ok && elastic, r.detect_s),
        seconds_or_dash(r.ok && elastic, r.membership_s),
        seconds_or_dash(r.ok && elastic, r.state_s),
        seconds_or_dash(r.ok && elastic, r.redone_step_s),
        r.ok ? seconds_or_dash(true, r.kill_to_first_step_s) : std::string("failed"),
        seconds_or_dash(r.ok, r.lost_s), ratio);
  }
  std::cout << "(seconds; to step: from the kill to the first completed step after it; lost: "
               "until one step past the kill, less one step; ratio: restart-all's loss over "
               "elastic's)\n";
}

int run(const Options& o) {
  TANDEM_CHECK(o.kill_after >= 3 && o.steps >= o.kill_after + 2,
               "bench elastic: --kill-after must be >= 3 and --steps >= --kill-after + 2");
  TANDEM_CHECK(o.checkpoint_every >= 1 && o.batch >= 1 && o.timeout_s >= 1,
               "bench elastic: --checkpoint-every, --batch-size and --timeout must be >= 1");
  for (int n : o.ranks) {
    TANDEM_CHECK(n >= 2 && n <= 64, "bench elastic: --ranks entries must be in [2, 64] (got {})",
                 n);
    TANDEM_CHECK(o.victim < n, "bench elastic: --victim {} is not a rank of a {}-rank run",
                 o.victim, n);
  }
  const fs::path root =
      o.dir.empty() ? fs::temp_directory_path() / fmt::format("tandem-bench-elastic-{}", ::getpid())
                    : fs::path(o.dir);
  fs::create_directories(root);
  std::ofstream json(o.out + ".jsonl");
  TANDEM_CHECK(json.good(), "bench elastic: cannot write {}.jsonl", o.out);
  std::vector<Result> results;
  for (const auto& model : o.models) {
    for (int n : o.ranks) {
      for (Path p : o.paths) {
        const Result& r = results.emplace_back(run_one(o, model, n, p, root));
        const nlohmann::json j = to_json(o, r);
        std::cout << j.dump() << std::endl;
        json << j.dump() << "\n" << std::flush;
      }
    }
  }
  print_table(results);
  const bool all_ok =
      std::all_of(results.begin(), results.end(), [](const Result& r) { return r.ok; });
  if (o.dir.empty() && all_ok) fs::remove_all(root);
  if (!all_ok)
    std::cout << fmt::format("(failed runs keep their folders under {})\n", root.string());
  return all_ok ? 0 : 1;
}

}  // namespace

void add_elastic_bench(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto* cmd = bench.add_subcommand(
      "elastic",
      "Seconds one killed worker costs: the elastic path (the survivors go on) against "
      "restart-all from the last checkpoint");
  cmd->add_option("--models", o->models, "models of tandem train")
      ->delimiter(',')
      ->capture_default_str();
  add_int_list_flag(*cmd, "--ranks", o->ranks, "world sizes");
  add_choice_list_flag<Path>(*cmd, "--paths", o->paths, kPaths, "comma-separated subset");
  add_int_flag(*cmd, "--kill-after", o->kill_after,
               "the victim is SIGKILLed once it has logged this step");
  add_int_flag(*cmd, "--steps", o->steps, "steps per job");
  add_int_flag(*cmd, "--checkpoint-every", o->checkpoint_every, "restart-all's checkpoints");
  add_int_flag(*cmd, "--batch-size", o->batch, "samples per rank per step");
  add_int_flag(*cmd, "--victim", o->victim, "the rank killed (-1: the last)");
  cmd->add_option("--launcher", o->launcher, "tandem-run (default: beside this program)");
  cmd->add_option("--dir", o->dir, "the jobs' folders (default: a fresh one under /tmp)");
  cmd->add_option("--out", o->out, "writes OUT.jsonl")->capture_default_str();
  add_int_flag(*cmd, "--timeout", o->timeout_s, "seconds per job before it is killed");
  cmd->callback([o, &exit_code] { exit_code = run(*o); });
}

}  // namespace tandem::bench
