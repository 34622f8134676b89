// `tandem bench pipeline`: the pipeline's bubble, measured against the
// theory. For each stage count p, schedule (gpipe, 1f1b) and micro-batch
// count m, p ranks run a Pipeline whose stages each take a fixed time per
// micro-batch forward and backward (--work sleep: a timed wait standing for
// a device's kernels, so stages do not compete for this host's few cores;
// --work compute: real matmuls), and each stage measures 1 - compute time /
// step time. Prints a table of measured against (p-1)/(m+p-1), writes one
// JSON line per configuration and a CSV, and with --trace-dir one Chrome
// trace per rank and configuration showing the schedule (F<mb>, B<mb>).
#include <ATen/ops/empty.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench/child_ranks.h"
#include "bench/flag_values.h"
#include "bench/subcommands.h"
#include "bench/training_steps.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"
#include "tandem/parallel/pipeline.h"

// The schedules travel to the child ranks in the --child JSON; the
// conversion is found by argument-dependent lookup, so it sits in the
// enum's namespace.
namespace tandem::parallel {
NLOHMANN_JSON_SERIALIZE_ENUM(PipelineScheduleKind, {{PipelineScheduleKind::kGPipe, "gpipe"},
                                                    {PipelineScheduleKind::k1F1B, "1f1b"}})
}  // namespace tandem::parallel

namespace tandem::bench {
namespace {

namespace fs = std::filesystem;
using parallel::PipelineScheduleKind;

enum class Work { kSleep, kCompute };
constexpr Choice<Work> kWorks[] = {{"sleep", Work::kSleep}, {"compute", Work::kCompute}};
NLOHMANN_JSON_SERIALIZE_ENUM(Work, {{Work::kSleep, "sleep"}, {Work::kCompute, "compute"}})

constexpr Choice<PipelineScheduleKind> kSchedules[] = {{"gpipe", PipelineScheduleKind::kGPipe},
                                                       {"1f1b", PipelineScheduleKind::k1F1B}};

// The backends a stage may use, by InitOptions::backend's names.
constexpr Choice<std::string_view> kBackends[] = {
    {"shm", "shm"}, {"gloo", "gloo"}, {"mpi", "mpi"}, {"auto", "auto"}};

struct Options {
  std::vector<int> stages = {2, 4};
  std::vector<int> micro_batches = {4, 8, 16};
  std::vector<PipelineScheduleKind> schedules = {PipelineScheduleKind::kGPipe,
                                                 PipelineScheduleKind::k1F1B};
  Work work = Work::kSleep;
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
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Options, stages, micro_batches, schedules, work,
                                                forward_ms, backward_ms, width, layers,
                                                micro_batch_size, steps, rounds, backend, trace_dir,
                                                out, timeout_s)

std::string schedule_name(PipelineScheduleKind s) {
  return choice_name<PipelineScheduleKind>(s, kSchedules);
}

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
    if (o.work == Work::kSleep) {
      model->push_back(TimedStage(o.width, o.forward_ms / 1e3, o.backward_ms / 1e3));
      continue;
    }
    for (int64_t l = 0; l < o.layers; ++l) model->push_back(torch::nn::Linear(o.width, o.width));
  }
  return model;
}

std::string config_name(int stages, PipelineScheduleKind schedule, int m) {
  return fmt::format("p{}_{}_m{}", stages, schedule_name(schedule), m);
}

// What one stage measured of one configuration over every round.
struct Measured {
  std::vector<double> bubbles, step_seconds;
  int max_in_flight = 0;
};
using Config = std::pair<PipelineScheduleKind, int>;  // schedule, micro-batches

// Runs o.steps steps of one configuration (after a warm-up step) and adds
// them to `into`; with `trace`, records them.
void measure(const Options& o, const std::shared_ptr<Communicator>& comm,
             PipelineScheduleKind schedule, int m, const std::shared_ptr<TraceRecorder>& trace,
             Measured& into) {
  const int p = comm->size();
  parallel::PipelineOptions po;
  po.schedule = schedule;
  po.micro_batches = m;
  if (o.work == Work::kCompute) {
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

// Every stage's median bubble and step time and its peak in flight for one
// configuration, gathered; rank 0 reports the configuration's JSON line.
void report_config(const Options& o, Communicator& comm, const Config& config,
                   const Measured& mine) {
  const int p = comm.size();
  const auto [schedule, m] = config;
  at::Tensor local = at::tensor(std::vector<double>{median(mine.bubbles), median(mine.step_seconds),
                                                    static_cast<double>(mine.max_in_flight)},
                                at::kDouble);
  at::Tensor all = at::empty({3 * p}, at::kDouble);
  comm.all_gather(all, local);
  if (comm.rank() != 0) return;
  const double theory = parallel::theoretical_bubble_fraction(p, m);
  nlohmann::json j = {{"bench", "pipeline"},
                      {"work", choice_name<Work>(o.work, kWorks)},
                      {"backend", comm.backend()},
                      {"stages", p},
                      {"schedule", schedule_name(schedule)},
                      {"micro_batches", m},
                      {"theoretical_bubble", theory},
                      {"steps", o.steps * o.rounds}};
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
  if (o.work == Work::kSleep) {
    j["forward_ms"] = o.forward_ms;
    j["backward_ms"] = o.backward_ms;
  }
  report(j);
}

// This process is one stage. Rounds of every schedule and micro-batch
// count, so that a slow spell of the machine hits one round of a few
// configurations, not all steps of one; then rank 0 reports a JSON line per
// configuration.
int run_child(const Options& o) {
  auto comm = init({.backend = parse_backend(o.backend),
                    .timeout = Millis(120'000),
                    .rendezvous_timeout = Millis(60'000)});
  std::map<Config, Measured> measured;
  for (int round = 0; round < o.rounds; ++round) {
    for (PipelineScheduleKind schedule : o.schedules) {
      for (int m : o.micro_batches) {
        std::shared_ptr<TraceRecorder> trace;
        if (!o.trace_dir.empty() && round == 0) {
          comm->barrier();  // the recorders' origins agree to a barrier's skew
          trace = std::make_shared<TraceRecorder>(comm->rank());
        }
        measure(o, comm, schedule, m, trace, measured[{schedule, m}]);
        if (trace) {
          const fs::path dir = fs::path(o.trace_dir) / config_name(comm->size(), schedule, m);
          fs::create_directories(dir);
          trace->write((dir / fmt::format("rank-{}.json", comm->rank())).string());
        }
      }
    }
  }
  for (PipelineScheduleKind schedule : o.schedules) {
    for (int m : o.micro_batches) report_config(o, *comm, {schedule, m}, measured[{schedule, m}]);
  }
  return 0;
}

// OUT.jsonl, OUT.csv and the table, from every configuration's line.
void write_results(const Options& o, const std::vector<nlohmann::json>& rows) {
  std::ofstream json(o.out + ".jsonl"), csv(o.out + ".csv");
  csv << "work,stages,schedule,micro_batches,theoretical_bubble,measured_bubble,relative_error,"
         "step_ms\n";
  for (const auto& j : rows) {
    json << j.dump() << "\n";
    std::cout << j.dump() << "\n";
  }
  std::cout << fmt::format("{:>6} {:>8} {:>5} {:>12} {:>10} {:>9} {:>9}\n", "stages", "schedule",
                           "m", "theoretical", "measured", "error", "step ms");
  const std::string work = choice_name<Work>(o.work, kWorks);
  for (const auto& j : rows) {
    const int p = j["stages"], m = j["micro_batches"];
    const std::string schedule = j["schedule"];
    const double theory = j["theoretical_bubble"], measured = j["measured_bubble"];
    const double error = j["relative_error"], step_ms = j["step_ms"];
    csv << fmt::format("{},{},{},{},{:.4f},{:.4f},{:.4f},{:.2f}\n", work, p, schedule, m, theory,
                       measured, error, step_ms);
    std::cout << fmt::format("{:>6} {:>8} {:>5} {:>12.3f} {:>10.3f} {:>8.1f}% {:>9.1f}\n", p,
                             schedule, m, theory, measured, 100 * error, step_ms);
  }
  std::cout << fmt::format(
      "(bubble: 1 - compute / step time per stage, median over steps, mean over stages; work: "
      "{}; written: {}.jsonl, {}.csv{})\n",
      work, o.out, o.out, o.trace_dir.empty() ? "" : ", traces under " + o.trace_dir);
}

int run(const Options& o) {
  for (int p : o.stages) TANDEM_CHECK(p >= 2, "--stages {}: a pipeline has at least 2", p);
  for (int m : o.micro_batches) TANDEM_CHECK(m >= 1, "--micro-batches {} must be >= 1", m);
  TANDEM_CHECK(o.steps >= 1 && o.rounds >= 1 && o.forward_ms >= 0 && o.backward_ms >= 0 &&
                   o.width >= 1 && o.layers >= 1 && o.micro_batch_size >= 1 && o.timeout_s >= 1,
               "--steps, --rounds, --width, --layers, --micro-batch-size and --timeout must be "
               ">= 1, the times >= 0");
  const fs::path scratch =
      fs::temp_directory_path() / fmt::format("tandem-bench-pipeline-{}", getpid());
  fs::create_directories(scratch);
  bool ok = true;
  std::vector<nlohmann::json> rows;
  for (int p : o.stages) {
    try {
      for (auto& j :
           run_children(fmt::format("bench pipeline: {} stages", p), child_args("pipeline", o), p,
                        {.independent = false,
                        .timeout = std::chrono::seconds(o.timeout_s),
                        .log_file = scratch / "output.log"})) {
        rows.push_back(std::move(j));
      }
    } catch (const Error& e) {
      std::cerr << e.what() << "\n";
      ok = false;
    }
  }
  write_results(o, rows);
  if (ok) fs::remove_all(scratch);
  return ok && !rows.empty() ? 0 : 1;
}

}  // namespace

void add_pipeline_bench(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  auto child = std::make_shared<std::string>();
  auto* cmd = bench.add_subcommand(
      "pipeline", "Measured pipeline bubble against (p-1)/(m+p-1) for GPipe and 1F1B");
  add_int_list_flag(*cmd, "--stages", o->stages, "stage counts (comma-separated)");
  add_int_list_flag(*cmd, "--micro-batches", o->micro_batches,
                    "micro-batch counts (comma-separated)");
  add_choice_list_flag<PipelineScheduleKind>(*cmd, "--schedules", o->schedules, kSchedules,
                                             "gpipe,1f1b");
  add_choice_flag<Work>(*cmd, "--work", o->work, kWorks,
                        "sleep (timed stages) | compute (Linear layers)");
  add_double_flag(*cmd, "--forward-ms", o->forward_ms,
                  "sleep: forward time per stage and micro-batch");
  add_double_flag(*cmd, "--backward-ms", o->backward_ms, "sleep: backward time");
  add_int_flag(*cmd, "--width", o->width, "features per layer");
  add_int_flag(*cmd, "--layers", o->layers, "compute: Linear layers per stage");
  add_int_flag(*cmd, "--micro-batch-size", o->micro_batch_size, "samples per micro-batch");
  add_int_flag(*cmd, "--steps", o->steps, "measured steps per configuration and round");
  add_int_flag(*cmd, "--rounds", o->rounds, "passes over all configurations (median of all steps)");
  add_value_flag(
      *cmd, "--backend", "NAME", o->backend,
      [o](const std::string& what, const std::string& text) {
        o->backend = std::string(parse_choice<std::string_view>(what, text, kBackends));
      },
      "shm | gloo | mpi | auto");
  cmd->add_option("--trace-dir", o->trace_dir,
                  "write DIR/p<P>_<schedule>_m<M>/rank-<r>.json (Chrome traces)");
  cmd->add_option("--out", o->out, "writes OUT.jsonl and OUT.csv")->capture_default_str();
  add_int_flag(*cmd, "--timeout", o->timeout_s,
               "seconds per stage count before its ranks are killed");
  add_child_flag(*cmd, *child);
  cmd->callback([o, child, &exit_code] {
    exit_code = child->empty() ? run(*o) : run_child(child_options(*child).get<Options>());
  });
}

}  // namespace tandem::bench
