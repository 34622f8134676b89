#include "lab/validate.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <thread>

#include "bench/training_steps.h"
#include "lab/netns_hosts.h"
#include "lab/simulate_run.h"
#include "lab/strategy_from_options.h"
#include "tandem/core/check.h"
#include "tandem/launch/child_processes.h"
#include "tandem/launch/launch_options.h"
#include "tandem/launch/program.h"
#include "tandem/train/straggler.h"

namespace tandem::lab {
namespace {

// The real runs' --log-every: each log step averages the loss over the
// ranks, which the prediction counts too.
constexpr int64_t kLogEvery = 5;

namespace fs = std::filesystem;

constexpr Millis kRunTimeout{300'000};

// This process's environment, with `extra` ("NAME=value") set over it.
std::vector<std::string> inherited_env(const std::vector<std::string>& extra = {}) {
  return launch::environment_with(launch::current_environment(), extra);
}

struct Command {
  std::vector<std::string> argv;
  std::vector<std::string> env;
};

// Runs the commands side by side (one per host) to the end, within
// kRunTimeout. Throws Error naming `what` with the failures' output.
void run_all(const std::vector<Command>& commands, const std::string& what) {
  launch::ChildProcesses children;
  for (size_t i = 0; i < commands.size(); ++i) {
    children.start_program(static_cast<int>(i), commands[i].argv[0], commands[i].argv,
                           commands[i].env);
  }
  const auto& results = children.wait(Clock::now() + kRunTimeout);
  const std::string failures = launch::describe_failures(results, 30);
  if (!failures.empty()) throw Error(fmt::format("lab validate: {} failed:\n{}", what, failures));
}

// The mean step time over the ranks whose metrics have step lines, between
// `from` and `to`.
double measured_step_s(const std::string& dir, int ranks, int from, int to) {
  double sum = 0;
  int counted = 0;
  for (int r = 0; r < ranks; ++r) {
    std::ifstream in(fmt::format("{}/metrics-{}.jsonl", dir, r));
    std::map<int64_t, double> elapsed;
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.contains("elapsed_s") && j.contains("step")) {
        elapsed[j["step"].get<int64_t>()] = j["elapsed_s"].get<double>();
      }
    }
    if (!elapsed.count(from) || !elapsed.count(to)) continue;
    sum += (elapsed[to] - elapsed[from]) / (to - from);
    ++counted;
  }
  TANDEM_CHECK(counted > 0, "lab validate: no rank in '{}' logged steps {} and {}", dir, from, to);
  return sum / counted;
}

// The synthetic data set whose samples the model takes.
std::string data_for(const std::string& model) {
  if (model == "gpt-mini") return "synthetic-tokens";
  if (model == "resnet18" || model == "resnet50") return "synthetic-cifar";
  return "synthetic-mnist";
}

// The link between the namespaces of `c`, as its profile's label: "veth-1gbit",
// or with a delay "tap-1gbit-2ms".
std::string link_label(const ValidationCase& c) {
  if (c.delay.count() == 0) return "veth-" + c.rate;
  const auto us = c.delay.count();
  return us % 1000 == 0 ? fmt::format("tap-{}-{}ms", c.rate, us / 1000)
                        : fmt::format("tap-{}-{}us", c.rate, us);
}

int machine_cores() { return std::max(1u, std::thread::hardware_concurrency()); }

class Validator {
 public:
  Validator(const ValidationOptions& o, std::ostream& log) : o_(o), log_(log) {}

  ValidationRow run(const ValidationCase& c) {
    ValidationRow row{.config = c};
    std::unique_ptr<NetnsHosts> hosts;
    if (c.hosts == 2) {
      hosts = std::make_unique<NetnsHosts>(c.rate, c.delay);
      if (!hosts->failure().empty()) {
        row.skipped = hosts->failure();
        return row;
      }
    }
    const std::string links = links_profile(c, hosts.get());
    std::vector<double> textbook;
    for (int round = 0; round < o_.rounds; ++round) {
      const auto [compute, speeds] = compute_profile(c);
      row.measured_rounds.push_back(measure(c, hosts.get()));
      const auto [predicted, book] = predict(c, {compute, links}, speeds);
      row.predicted_rounds.push_back(predicted);
      textbook.push_back(book);
    }
    row.measured_s = bench::median(row.measured_rounds);
    row.predicted_s = bench::median(row.predicted_rounds);
    row.textbook_s = bench::median(textbook);
    return row;
  }

 private:
  // tandem-run for host `host` of `c`, up to and including "--".
  void tandem_run_prefix(const ValidationCase& c, const NetnsHosts* hosts, int host,
                         std::vector<std::string>& argv, std::vector<std::string>& env) const {
    argv.clear();
    env = inherited_env();
    if (hosts) {
      argv = hosts->exec(host);
      env = inherited_env({"GLOO_SOCKET_IFNAME=" + hosts->interface(host),
                           "TANDEM_HOST_ID=lab-host-" + std::to_string(host)});
    }
    argv.push_back(o_.tandem_run);
    const int per_host = c.processes / c.hosts;
    argv.insert(argv.end(), {"--nproc-per-node", std::to_string(per_host)});
    if (hosts) {
      argv.insert(argv.end(), {"--nnodes", "2", "--node-rank", std::to_string(host),
                               "--master-addr", hosts->address(0), "--master-port", "29671"});
    }
    argv.push_back("--");
  }

  std::vector<Command> launch(const ValidationCase& c, const NetnsHosts* hosts,
                              const std::vector<std::string>& program) {
    std::vector<Command> commands;
    for (int h = 0; h < c.hosts; ++h) {
      Command cmd;
      tandem_run_prefix(c, hosts, h, cmd.argv, cmd.env);
      cmd.argv.insert(cmd.argv.end(), program.begin(), program.end());
      commands.push_back(std::move(cmd));
    }
    return commands;
  }

  // Fresh compute profiles just before each real run, one process pinned to
  // each CPU, all at once: the machine drifts between states minutes apart,
  // its vCPUs differ in speed, and two busy processes slow and jolt each
  // other (docs/lab.md). Returns CPU 0's profile (whose timed steps give the
  // jitter) and every CPU's speed relative to it.
  std::pair<std::string, std::vector<double>> compute_profile(const ValidationCase& c) {
    std::vector<Command> profiles;
    auto path_of = [&](int cpu) {
      return fmt::format("{}/compute-{}-cpu{}.json", o_.dir, c.name, cpu);
    };
    for (int cpu = 0; cpu < machine_cores(); ++cpu) {
      // As tandem-run starts each rank (one BLAS thread, malloc on huge
      // pages): OpenBLAS would otherwise use every core for one profiled
      // process.
      profiles.push_back(
          {{o_.tandem, "profile", "--model", c.model, "--batch-size", std::to_string(o_.batch_size),
            "--steps", "30", "--cpu", std::to_string(cpu), "--out", path_of(cpu)},
           launch::with_worker_defaults(launch::current_environment())});
    }
    run_all(profiles, "the compute profile of " + c.model);
    std::vector<double> step_s;
    for (int cpu = 0; cpu < machine_cores(); ++cpu) {
      step_s.push_back(sim::read_profile(path_of(cpu)).compute->step_s);
    }
    std::vector<double> speeds;
    for (double s : step_s) speeds.push_back(step_s[0] / s);
    return {path_of(0), speeds};
  }

  // shm on one host; Gloo over the shaped veth, 1 process per namespace.
  std::string links_profile(const ValidationCase& c, const NetnsHosts* hosts) {
    const std::string key = c.hosts == 1 ? "shm" : link_label(c);
    auto it = links_.find(key);
    if (it != links_.end()) return it->second;
    const std::string label = c.hosts == 1 ? "loopback" : link_label(c);
    const std::string path = fmt::format("{}/links-{}.json", o_.dir, key);
    log_ << fmt::format("# profiling links: {} on 2 processes\n", label);
    ValidationCase two = c;
    two.processes = 2;
    run_all(launch(two, hosts,
                   {o_.tandem, "profile", "links", "--transports", c.hosts == 1 ? "shm" : "gloo",
                    "--label", label, "--max-bytes", "4194304", "--out", path}),
            "the links profile " + label);
    return links_[key] = path;
  }

  double measure(const ValidationCase& c, const NetnsHosts* hosts) {
    const std::string dir = fmt::format("{}/run-{}", o_.dir, c.name);
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::vector<std::string> train = {o_.tandem,      "train",
                                      "--model",      c.model,
                                      "--data",       data_for(c.model),
                                      "--batch-size", std::to_string(o_.batch_size),
                                      "--steps",      std::to_string(o_.steps),
                                      "--log-every",  std::to_string(kLogEvery),
                                      "--metrics",    dir + "/metrics-{rank}.jsonl"};
    if (c.mesh.empty()) {
      train.insert(train.end(), {"--strategy", c.strategy});
    } else {
      train.insert(train.end(), {"--strategy", "ddp", "--mesh", c.mesh});
    }
    if (!c.slowdown.empty()) train.insert(train.end(), {"--inject-slowdown", c.slowdown});
    if (c.hosts == 2) train.insert(train.end(), {"--backend", "auto"});
    run_all(launch(c, hosts, train), "the real run " + c.name);
    return measured_step_s(dir, c.processes, o_.warmup_steps, o_.steps);
  }

  sim::ClusterSpec cluster_for(const ValidationCase& c, const sim::StrategySpec& spec,
                               const std::vector<double>& core_speeds) const {
    sim::ClusterSpec k;
    k.name = c.hosts == 1 ? "this machine" : "two namespaces, " + link_label(c);
    k.slowdown = sim::SlowdownDistribution::kProfile;
    k.devices_per_node = c.processes / c.hosts;
    k.intra.from_profile = sim::Transport::kShm;
    k.intra.label = "loopback";
    if (c.hosts == 1) {
      k.topology = sim::Topology::kSingleHost;
      k.core_speeds = core_speeds;
      k.cores_per_node = static_cast<int>(core_speeds.size());
    } else {
      // Both namespaces share this machine's cores: rank r of the job runs
      // on core r while there are enough, else they share all the cores.
      const int computing =
          spec.kind == sim::SimStrategy::kPs ? c.processes - spec.servers : c.processes;
      double capacity = 0;
      for (double v : core_speeds) capacity += v;
      if (computing > static_cast<int>(core_speeds.size())) {
        k.compute_speed = capacity / computing;
      } else {
        for (int r = 0; r < computing; ++r) k.slow_ranks.push_back({r, 1 / core_speeds[r]});
      }
      k.network.from_profile = sim::Transport::kGloo;
      k.network.label = link_label(c);
    }
    if (!c.slowdown.empty()) {
      const train::InjectSlowdown s = train::parse_inject_slowdown(c.slowdown);
      for (int r : s.ranks) k.slow_ranks.push_back({r, s.factor});
    }
    return k;
  }

  // The simulator's and the textbook's step time for `c`.
  std::pair<double, double> predict(const ValidationCase& c, std::vector<std::string> profiles,
                                    const std::vector<double>& core_speeds) {
    if (c.hosts == 2) {
      ValidationCase one_host;  // the intra-node link: shared memory
      profiles.push_back(links_profile(one_host, nullptr));
    }
    SimulationInputs in = load_profiles(profiles);
    train::TrainerOptions base;
    base.run.batch_size = o_.batch_size;
    base.observe.log_every = kLogEvery;
    if (!c.mesh.empty()) base.mesh.shape = train::parse_mesh(c.mesh);
    const sim::StrategySpec spec = strategy_from_options(
        with_strategy(base, c.mesh.empty() ? c.strategy : "pipeline"), in.compute);
    in.cluster = cluster_for(c, spec, core_speeds);
    const sim::SimResult r = sim::simulate(in.compute, in.links, in.cluster, spec, c.processes);
    return {r.step_s, r.textbook_step_s};
  }

  const ValidationOptions& o_;
  std::ostream& log_;
  std::map<std::string, std::string> links_;  // "shm" or a link_label -> profile path
};

}  // namespace

std::vector<ValidationCase> default_cases() {
  std::vector<ValidationCase> cases;
  for (const char* s : {"ddp", "zero3", "ps", "gossip"}) {
    for (int n : {2, 3, 4}) {
      cases.push_back({.name = fmt::format("{}-{}-shm", s, n),
                       .model = "convnet",
                       .strategy = s,
                       .processes = n});
    }
  }
  cases.push_back({.name = "1f1b-2-shm",
                   .model = "gpt-mini",
                   .strategy = "pipeline",
                   .processes = 2,
                   .mesh = "pp=2"});
  cases.push_back({.name = "1f1b-dp2-4-shm",
                   .model = "gpt-mini",
                   .strategy = "pipeline",
                   .processes = 4,
                   .mesh = "dp=2,pp=2"});
  cases.push_back({.name = "ddp-2-shm-straggler",
                   .model = "convnet",
                   .strategy = "ddp",
                   .processes = 2,
                   .slowdown = "ranks=1,factor=2"});
  const struct {
    const char* strategy;
    int processes;
    const char* rate;
  } netns[] = {{"ddp", 2, "1gbit"},     {"ddp", 2, "200mbit"}, {"ddp", 4, "1gbit"},
               {"zero3", 2, "200mbit"}, {"ps", 2, "200mbit"},  {"gossip", 2, "1gbit"}};
  for (const auto& n : netns) {
    cases.push_back({.name = fmt::format("{}-{}-veth-{}", n.strategy, n.processes, n.rate),
                     .model = "convnet",
                     .strategy = n.strategy,
                     .processes = n.processes,
                     .hosts = 2,
                     .rate = n.rate});
  }
  // Added latency: netem is missing, so a DelayLink holds each frame.
  const struct {
    const char* strategy;
    int delay_ms;
  } delayed[] = {{"ddp", 1}, {"ps", 1}, {"gossip", 2}};
  for (const auto& d : delayed) {
    ValidationCase c{.model = "convnet",
                     .strategy = d.strategy,
                     .processes = 2,
                     .hosts = 2,
                     .rate = "1gbit",
                     .delay = std::chrono::milliseconds(d.delay_ms)};
    c.name = fmt::format("{}-2-{}", d.strategy, link_label(c));
    cases.push_back(std::move(c));
  }
  return cases;
}

std::vector<ValidationRow> run_validation(const ValidationOptions& options,
                                          const std::vector<ValidationCase>& cases,
                                          std::ostream& log) {
  TANDEM_CHECK(options.rounds >= 1, "lab validate: --rounds must be >= 1 (got {})", options.rounds);
  TANDEM_CHECK(options.steps > options.warmup_steps && options.warmup_steps >= 5 &&
                   options.steps % 5 == 0 && options.warmup_steps % 5 == 0,
               "lab validate: --steps must exceed --warmup-steps, both multiples of 5 (got {} "
               "and {})",
               options.steps, options.warmup_steps);
  fs::create_directories(options.dir);
  Validator v(options, log);
  std::vector<ValidationRow> rows;
  for (const ValidationCase& c : cases) {
    if (!options.only.empty() &&
        std::find(options.only.begin(), options.only.end(), c.name) == options.only.end()) {
      continue;
    }
    rows.push_back(v.run(c));
    const ValidationRow& r = rows.back();
    if (!r.skipped.empty()) {
      log << fmt::format("{:<22} skipped: {}\n", c.name, r.skipped);
    } else {
      log << fmt::format(
          "{:<22} measured {:8.2f} ms  predicted {:8.2f} ms ({:+6.1f}%)  "
          "textbook {:8.2f} ms ({:+6.1f}%)\n",
          c.name, r.measured_s * 1e3, r.predicted_s * 1e3, r.error() * 100, r.textbook_s * 1e3,
          r.textbook_error() * 100);
    }
    log.flush();
  }
  return rows;
}

}  // namespace tandem::lab
