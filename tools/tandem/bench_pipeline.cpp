#include "bench_pipeline.h"

#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

#include "child_ranks.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"
#include "tandem/parallel/pipeline.h"

namespace tandem::tools {
namespace {

namespace fs = std::filesystem;

struct Options {
  std::vector<int> stages = {2, 4};
  std::vector<int> micro_batches = {4, 8, 16};
  std::vector<std::string> schedules = {"gpipe", "1f1b"};
  std::string work = "sleep";  // sleep | compute
  // Per stage and micro-batch (sleep): a GPU stage's tens of milliseconds,
  // so that this host's ~0.25 ms per point-to-point message is as small a
  // share of a step as NCCL's tens of microseconds are of a GPU's.
  double forward_ms = 20;
  double backward_ms = 40;
  int64_t width = 256;  // compute: features of each stage's Linear layers
  int64_t layers = 4;   // compute: Linear layers per stage
  int64_t micro_batch_size = 16;
  int steps = 2;   // measured steps per configuration and round, after a warm-up step
  int rounds = 3;  // passes over every configuration; the bubble is the median step's
  std::string backend = "shm";
  std::string trace_dir;
  std::string out = "bench_pipeline";
  int timeout_s = 600;
  bool worker = false;  // internal: this process is one stage
  std::string results;  // internal: where rank 0 appends JSON lines
};

// Stands for a layer's kernels on a device: sleeps `forward` seconds in
// forward and `backward` seconds in backward.
struct TimedWork : torch::autograd::Function<TimedWork> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            double forward_s, double backward_s) {
    ctx->saved_data["backward_s"] = backward_s;
    std::this_thread::sleep_for(std::chrono::duration<double>(forward_s));
    return x.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    std::this_thread::sleep_for(
        std::chrono::duration<double>(ctx->saved_data["backward_s"].toDouble()));
    return {grads[0], at::Tensor(), at::Tensor()};
  }
};

class TimedStageImpl : public torch::nn::Module {
 public:
  TimedStageImpl(int64_t width, double forward_s, double backward_s)
      : linear_(register_module("linear", torch::nn::Linear(width, width))),
        forward_s_(forward_s),
        backward_s_(backward_s) {}
  at::Tensor forward(const at::Tensor& x) {
    return TimedWork::apply(linear_->forward(x), forward_s_, backward_s_);
  }

 private:
  torch::nn::Linear linear_;
  double forward_s_, backward_s_;
};
TORCH_MODULE(TimedStage);

// One layer per stage under --work sleep; `layers` Linear layers (tanh
// between) per stage under --work compute.
torch::nn::Sequential make_model(const Options& o, int stages) {
  torch::nn::Sequential model;
  for (int s = 0; s < stages; ++s) {
    if (o.work == "sleep") {
      model->push_back(TimedStage(o.width, o.forward_ms / 1e3, o.backward_ms / 1e3));
      continue;
    }
    for (int64_t l = 0; l < o.layers; ++l) model->push_back(torch::nn::Linear(o.width, o.width));
  }
  return model;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string config_name(int stages, const std::string& schedule, int m) {
  return fmt::format("p{}_{}_m{}", stages, schedule, m);
}

// What one stage measured of one configuration over every round.
struct Measured {
  std::vector<double> bubbles, step_seconds;
  int max_in_flight = 0;
};

// Runs o.steps steps of one configuration (after a warm-up step) and adds
// them to `into`; with `trace`, records them.
void measure(const Options& o, const std::shared_ptr<Communicator>& comm,
             const std::string& schedule, int m, const std::shared_ptr<TraceRecorder>& trace,
             Measured& into) {
  const int p = comm->size();
  parallel::PipelineOptions po;
  po.schedule = parallel::parse_pipeline_schedule(schedule);
  po.micro_batches = m;
  if (o.work == "compute") {
    for (int s = 0; s < p; ++s) po.cut_points.push_back(static_cast<int>(s * o.layers));
  }
  auto mse = [](const at::Tensor& y, const at::Tensor& t) {
    return torch::nn::functional::mse_loss(y, t);
  };
  at::manual_seed(0);
  at::Tensor x = at::randn({m * o.micro_batch_size, o.width});
  at::Tensor t = at::randn({m * o.micro_batch_size, o.width});
  parallel::Pipeline(make_model(o, p), comm, po).train_step(x, t, mse);  // warm-up
  po.trace = trace;
  parallel::Pipeline pipe(make_model(o, p), comm, po);
  for (int s = 0; s < o.steps; ++s) {
    const auto stats = pipe.train_step(x, t, mse);
    into.bubbles.push_back(1.0 - stats.compute_seconds / stats.step_seconds);
    into.step_seconds.push_back(stats.step_seconds);
    into.max_in_flight = std::max(into.max_in_flight, stats.max_in_flight);
  }
}

// This process is one stage. Rounds of every schedule and micro-batch
// count, so that a slow spell of the machine hits one round of a few
// configurations, not all steps of one; then rank 0 appends a JSON line per
// configuration to o.results.
int run_worker(const Options& o) {
  auto comm = init({.backend = parse_backend(o.backend),
                    .timeout = Millis(120'000),
                    .rendezvous_timeout = Millis(60'000)});
  const int p = comm->size();
  std::map<std::pair<std::string, int>, Measured> measured;
  for (int round = 0; round < o.rounds; ++round) {
    for (const auto& schedule : o.schedules) {
      for (int m : o.micro_batches) {
        std::shared_ptr<TraceRecorder> trace;
        if (!o.trace_dir.empty() && round == 0) {
          comm->barrier();  // the recorders' origins agree to a barrier's skew
          trace = std::make_shared<TraceRecorder>(comm->rank());
        }
        measure(o, comm, schedule, m, trace, measured[{schedule, m}]);
        if (trace) {
          const fs::path dir = fs::path(o.trace_dir) / config_name(p, schedule, m);
          fs::create_directories(dir);
          trace->write((dir / fmt::format("rank-{}.json", comm->rank())).string());
        }
      }
    }
  }
  std::ofstream results;
  if (comm->rank() == 0) results.open(o.results, std::ios::app);
  for (const auto& schedule : o.schedules) {
    for (int m : o.micro_batches) {
      const Measured& mine = measured[{schedule, m}];
      // Every stage's median bubble and step time, and its peak in flight.
      at::Tensor local =
          at::tensor(std::vector<double>{median(mine.bubbles), median(mine.step_seconds),
                                         static_cast<double>(mine.max_in_flight)},
                     at::kDouble);
      at::Tensor all = at::empty({3 * p}, at::kDouble);
      comm->all_gather(all, local);
      if (comm->rank() != 0) continue;
      const double theory = parallel::theoretical_bubble_fraction(p, m);
      nlohmann::json j = {{"bench", "pipeline"},          {"work", o.work},
                          {"backend", comm->backend()},   {"stages", p},
                          {"schedule", schedule},         {"micro_batches", m},
                          {"theoretical_bubble", theory}, {"steps", o.steps * o.rounds}};
      double mean = 0;
      std::vector<double> per_stage, flight;
      for (int s = 0; s < p; ++s) {
        per_stage.push_back(all[3 * s].item<double>());
        flight.push_back(all[3 * s + 2].item<double>());
        mean += per_stage.back() / p;
      }
      j["measured_bubble"] = mean;
      j["bubble_per_stage"] = per_stage;
      j["max_in_flight_per_stage"] = flight;
      j["step_ms"] = all[1].item<double>() * 1e3;
      j["relative_error"] = std::abs(mean / theory - 1.0);
      // The step time beyond the schedule's, per micro-batch: what each
      // micro-batch's messages and waits cost.
      j["overhead_ms_per_micro_batch"] = (mean - theory) * j["step_ms"].get<double>() / m;
      if (o.work == "sleep") {
        j["forward_ms"] = o.forward_ms;
        j["backward_ms"] = o.backward_ms;
      }
      results << j.dump() << "\n" << std::flush;
    }
  }
  return 0;
}

int run(const Options& o, const std::vector<std::string>& self) {
  TANDEM_CHECK(o.work == "sleep" || o.work == "compute", "--work {} is not one of sleep, compute",
               o.work);
  for (const auto& s : o.schedules) parallel::parse_pipeline_schedule(s);
  for (int p : o.stages) TANDEM_CHECK(p >= 2, "--stages {}: a pipeline has at least 2", p);
  for (int m : o.micro_batches) TANDEM_CHECK(m >= 1, "--micro-batches {} must be >= 1", m);
  TANDEM_CHECK(
      o.steps >= 1 && o.rounds >= 1 && o.forward_ms >= 0 && o.backward_ms >= 0 && o.width >= 1 &&
          o.layers >= 1 && o.micro_batch_size >= 1,
      "--steps, --rounds, --width, --layers and --micro-batch-size must be >= 1, the times >= 0");
  const fs::path scratch =
      fs::temp_directory_path() / fmt::format("tandem-bench-pipeline-{}", getpid());
  fs::create_directories(scratch);
  const std::string results = (scratch / "results.jsonl").string();
  bool ok = true;
  for (int p : o.stages) {
    std::vector<std::string> args = self;
    args.insert(args.end(), {"--worker", "--results", results});
    const std::string error = run_child_ranks(p, args, scratch, o.timeout_s);
    if (!error.empty()) {
      std::cerr << fmt::format("bench pipeline: {} stages: {}\n", p, error);
      ok = false;
    }
  }
  std::ofstream json(o.out + ".jsonl"), csv(o.out + ".csv");
  csv << "work,stages,schedule,micro_batches,theoretical_bubble,measured_bubble,relative_error,"
         "step_ms\n";
  std::ifstream in(results);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) {
    rows.push_back(nlohmann::json::parse(line));
    json << line << "\n";
    std::cout << line << "\n";
  }
  std::cout << fmt::format("{:>6} {:>8} {:>5} {:>12} {:>10} {:>9} {:>9}\n", "stages", "schedule",
                           "m", "theoretical", "measured", "error", "step ms");
  for (const auto& j : rows) {
    const auto cells = std::make_tuple(
        j["stages"].get<int>(), j["schedule"].get<std::string>(), j["micro_batches"].get<int>(),
        j["theoretical_bubble"].get<double>(), j["measured_bubble"].get<double>(),
        j["relative_error"].get<double>(), j["step_ms"].get<double>());
    const auto& [p, schedule, m, theory, measured, error, step_ms] = cells;
    csv << fmt::format("{},{},{},{},{:.4f},{:.4f},{:.4f},{:.2f}\n", o.work, p, schedule, m, theory,
                       measured, error, step_ms);
    std::cout << fmt::format("{:>6} {:>8} {:>5} {:>12.3f} {:>10.3f} {:>8.1f}% {:>9.1f}\n", p,
                             schedule, m, theory, measured, 100 * error, step_ms);
  }
  std::cout << fmt::format(
      "(bubble: 1 - compute / step time per stage, median over steps, mean over stages; work: "
      "{}; written: {}.jsonl, {}.csv{})\n",
      o.work, o.out, o.out, o.trace_dir.empty() ? "" : ", traces under " + o.trace_dir);
  if (ok) fs::remove_all(scratch);
  return ok && !rows.empty() ? 0 : 1;
}

}  // namespace

void add_bench_pipeline(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto* cmd = bench.add_subcommand(
      "pipeline", "Measured pipeline bubble against (p-1)/(m+p-1) for GPipe and 1F1B");
  cmd->add_option("--stages", o->stages, "stage counts (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--micro-batches", o->micro_batches, "micro-batch counts (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--schedules", o->schedules, "gpipe,1f1b")->delimiter(',')->capture_default_str();
  cmd->add_option("--work", o->work, "sleep (timed stages) | compute (Linear layers)")
      ->capture_default_str();
  cmd->add_option("--forward-ms", o->forward_ms, "sleep: forward time per stage and micro-batch")
      ->capture_default_str();
  cmd->add_option("--backward-ms", o->backward_ms, "sleep: backward time")->capture_default_str();
  cmd->add_option("--width", o->width, "features per layer")->capture_default_str();
  cmd->add_option("--layers", o->layers, "compute: Linear layers per stage")->capture_default_str();
  cmd->add_option("--micro-batch-size", o->micro_batch_size, "samples per micro-batch")
      ->capture_default_str();
  cmd->add_option("--steps", o->steps, "measured steps per configuration and round")
      ->capture_default_str();
  cmd->add_option("--rounds", o->rounds, "passes over all configurations (median of all steps)")
      ->capture_default_str();
  cmd->add_option("--backend", o->backend, "shm | gloo | mpi | auto")->capture_default_str();
  cmd->add_option("--trace-dir", o->trace_dir,
                  "write DIR/p<P>_<schedule>_m<M>/rank-<r>.json (Chrome traces)");
  cmd->add_option("--out", o->out, "writes OUT.jsonl and OUT.csv")->capture_default_str();
  cmd->add_option("--timeout", o->timeout_s, "seconds per stage count before its ranks are killed")
      ->capture_default_str();
  cmd->add_flag("--worker", o->worker)->group("");
  cmd->add_option("--results", o->results)->group("");
  cmd->callback([o, cmd, &exit_code] {
    if (o->worker) {
      exit_code = run_worker(*o);
      return;
    }
    // The children rerun this command line as workers.
    std::vector<std::string> self = {"/proc/self/exe", "bench", "pipeline"};
    for (const auto* opt : cmd->get_options()) {
      if (opt->get_group().empty() || opt->count() == 0 || opt->get_name() == "--help") continue;
      for (const auto& value : opt->results()) self.insert(self.end(), {opt->get_name(), value});
    }
    exit_code = run(*o, self);
  });
}

}  // namespace tandem::tools
