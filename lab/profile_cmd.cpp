// `tandem profile` (a model's layers on one process), `tandem profile links`
// (alpha-beta fits under a launcher) and `tandem profile merge`. Each parses
// its flags, calls profile_compute.h or profile_links.h, prints a short
// table and writes the profile (tandem/sim/profile.h, docs/lab.md).
#include <fmt/format.h>
#include <sched.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <iostream>
#include <memory>
#include <thread>

#include "bench/flag_values.h"
#include "lab/lab.h"
#include "lab/profile_compute.h"
#include "lab/profile_links.h"
#include "lab/simulate_run.h"
#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/core/trace.h"
#include "tandem/sim/profile.h"
#include "tandem/train/choices.h"

namespace tandem::lab {
namespace {

double ms(double seconds) { return seconds * 1e3; }

// A flag that takes one of E's spellings (train/choices.h).
template <typename E>
void add_train_choice(CLI::App& cmd, const std::string& flag, E& target, const std::string& help) {
  bench::add_value_flag(
      cmd, flag, "NAME", std::string(train::name_of(target)),
      [&target](const std::string&, const std::string& text) {
        target = train::parse_choice<E>(text);
      },
      help);
}

// ---- tandem profile ----------------------------------------------------------

struct ComputeFlags {
  ProfileComputeOptions options;
  const CLI::Option* model_flag = nullptr;  // given: count() > 0
  std::string out = "profile.json";
  std::string trace;
  int cpu = -1;  // --cpu: pin the process to this CPU first; -1: wherever the OS puts it
};

// Pins this process to one CPU, so that the cores of a host whose vCPUs
// differ in speed can be profiled one by one (docs/lab.md).
void pin_to_cpu(int cpu) {
  const int cpus = static_cast<int>(std::thread::hardware_concurrency());
  TANDEM_CHECK(cpu >= 0 && cpu < std::max(cpus, 1),
               "profile: --cpu must be a CPU of this machine, 0 to {} (got {})", cpus - 1, cpu);
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0) {
    throw Error(fmt::format("profile: cannot pin to CPU {}: {}", cpu, std::strerror(errno)));
  }
}

void print_compute(const sim::ComputeProfile& p, int warmup) {
  std::cout << fmt::format(
      "# tandem profile: {}, batch {}, {}, {} thread(s), median of {} steps after {} warm-up\n",
      p.model, p.batch_size, p.dtype, p.threads, p.steps, warmup);
  std::cout << fmt::format("{:<28} {:>9} {:>9} {:>11} {:>12} {:>11}\n", "layer", "fwd_ms", "bwd_ms",
                           "params", "activations", "output");
  int64_t activations = 0;
  for (const auto& l : p.layers) {
    activations += l.activation_bytes;
    std::cout << fmt::format("{:<28} {:>9.3f} {:>9.3f} {:>11} {:>12} {:>11}\n", l.name,
                             ms(l.forward_s), ms(l.backward_s), human_bytes(l.param_bytes),
                             human_bytes(l.activation_bytes), human_bytes(l.output_bytes));
  }
  std::cout << fmt::format("{:<28} {:>9.3f} {:>9.3f} {:>11} {:>12}\n", "total", ms(p.forward_s()),
                           ms(p.backward_s()), human_bytes(p.param_bytes()),
                           human_bytes(activations));
  std::cout << fmt::format("optimizer {:.3f} ms, other {:.3f} ms, step {:.3f} ms (IQR {:.3f} ms)\n",
                           ms(p.optimizer_s), ms(p.other_s), ms(p.step_s), ms(p.step_spread_s));
}

void run_compute(ComputeFlags& f) {
  const ProfileComputeOptions& o = f.options;
  TANDEM_CHECK(o.batch_size >= 1, "profile: --batch-size must be >= 1 (got {})", o.batch_size);
  TANDEM_CHECK(o.steps >= 1, "profile: --steps must be >= 1 (got {})", o.steps);
  TANDEM_CHECK(o.warmup >= 0, "profile: --warmup must be >= 0 (got {})", o.warmup);
  TANDEM_CHECK(
      f.model_flag->count() > 0,
      "profile: --model is required (one of {}); or use 'profile links' or 'profile merge'",
      train::choice_names<train::ModelKind>());
  TANDEM_CHECK(!f.out.empty(), "profile: --out must name a file");
  if (f.cpu >= 0) pin_to_cpu(f.cpu);
  std::unique_ptr<TraceRecorder> trace;
  if (!f.trace.empty()) trace = std::make_unique<TraceRecorder>(0);
  ProfileComputeOptions run = o;
  run.trace = trace.get();
  sim::Profile profile;
  profile.compute = profile_compute(run);
  print_compute(*profile.compute, o.warmup);
  sim::write_profile(profile, f.out);
  std::cout << "wrote " << f.out << "\n";
  if (trace) {
    trace->write(f.trace);
    std::cout << "wrote " << f.trace << "\n";
  }
}

void add_compute_flags(CLI::App& cmd, ComputeFlags& f) {
  add_train_choice(
      cmd, "--model", f.options.model,
      "the zoo model to profile (required): " + train::choice_names<train::ModelKind>());
  f.model_flag = cmd.get_option("--model")->default_str("");
  bench::add_int_flag(cmd, "--batch-size", f.options.batch_size, "samples per step (>= 1)");
  add_train_choice(cmd, "--dtype", f.options.dtype, "float32|float64");
  add_train_choice(cmd, "--optimizer", f.options.optimizer, "sgd (momentum 0.9)|adamw");
  bench::add_int_flag(cmd, "--warmup", f.options.warmup, "untimed steps first (>= 0)");
  bench::add_int_flag(cmd, "--steps", f.options.steps, "timed steps; medians over them (>= 1)");
  cmd.add_option("--out", f.out, "the profile to write")->capture_default_str();
  cmd.add_option("--trace", f.trace, "also write the timed steps as a Chrome trace to FILE");
  bench::add_int_flag(cmd, "--cpu", f.cpu, "pin to this CPU first (default: not pinned)");
}

// ---- tandem profile links ----------------------------------------------------

void print_links(const LinksRun& run, const ProfileLinksOptions& o) {
  std::cout << fmt::format(
      "# tandem profile links: {} ranks on {} host(s){}, median of {} interleaved rounds\n",
      run.ranks, run.hosts, o.label.empty() ? "" : ", label '" + o.label + "'", o.rounds);
  std::cout << fmt::format("{:<9} {:<15} {:<10} {:>5} {:>10} {:>10} {:>8} {:>6}\n", "transport",
                           "op", "algorithm", "ranks", "alpha_us", "GB/s", "max_err", "points");
  for (const auto& f : run.fits) {
    const std::string gbps =
        f.beta_s_per_byte > 0 ? fmt::format("{:.2f}", 1e-9 / f.beta_s_per_byte) : "-";
    std::cout << fmt::format("{:<9} {:<15} {:<10} {:>5} {:>10.1f} {:>10} {:>7.0f}% {:>6}\n",
                             sim::name_of(f.transport), sim::name_of(f.op),
                             sim::name_of(f.algorithm), f.ranks, f.alpha_s * 1e6, gbps,
                             f.max_relative_error * 100, f.points.size());
  }
}

// A comma-separated flag of profile.h's enums.
template <typename E>
void add_enum_list(CLI::App& cmd, const std::string& flag, std::vector<E>& target,
                   E (*parse)(std::string_view, std::string_view), const std::string& defaults,
                   const std::string& help) {
  bench::add_list_flag(
      cmd, flag, "NAME", defaults,
      [&target, parse](const std::string& what, const std::vector<std::string>& texts) {
        target.clear();
        for (const auto& t : texts) target.push_back(parse(t, what));
      },
      help);
}

void add_links_command(CLI::App& profile, int& exit_code) {
  auto o = std::make_shared<ProfileLinksOptions>();
  auto out = std::make_shared<std::string>("links.json");
  auto* cmd = profile.add_subcommand(
      "links",
      "Fit alpha + beta * bytes per transport and operation (run under tandem-run or "
      "mpirun); rank 0 writes the profile");
  bench::add_int_flag(*cmd, "--min-bytes", o->min_bytes, "smallest message (default 4096)");
  bench::add_int_flag(*cmd, "--max-bytes", o->max_bytes, "largest message (default 16777216)");
  bench::add_int_flag(*cmd, "--step-factor", o->step_factor, "size multiplier (default 4)");
  bench::add_int_flag(*cmd, "--iters", o->iters, "timed operations per pass (0: by size)");
  bench::add_int_flag(*cmd, "--warmup", o->warmup, "untimed operations per pass");
  bench::add_int_flag(*cmd, "--rounds", o->rounds, "interleaved passes per size; median counts");
  add_enum_list(*cmd, "--ops", o->ops, &sim::parse_link_op,
                "all_reduce,reduce_scatter,all_gather,broadcast,send_recv",
                "operations to fit (send_recv: ranks 0 and 1, ping-pong halved)");
  add_enum_list(*cmd, "--transports", o->transports, &sim::parse_transport, "",
                "shm,gloo,mpi (default: every one reachable; mpi needs mpirun)");
  cmd->add_option("--label", o->label, "free text stored in every fit, e.g. 'loopback'");
  cmd->add_option("--out", *out, "the profile rank 0 writes")->capture_default_str();
  cmd->callback([o, out, &exit_code] {
    TANDEM_CHECK(!out->empty(), "profile links: --out must name a file");
    const LinksRun run = profile_links(*o);
    if (run.rank == 0) {
      print_links(run, *o);
      sim::Profile p;
      p.links = run.fits;
      sim::write_profile(p, *out);
      std::cout << "wrote " << *out << "\n";
    }
    exit_code = 0;
  });
}

// ---- tandem profile merge ----------------------------------------------------

void add_merge_command(CLI::App& profile, int& exit_code) {
  auto inputs = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  auto* cmd = profile.add_subcommand(
      "merge", "Join a compute profile and links profiles into one (links are concatenated)");
  cmd->add_option("PROFILES", *inputs, "two or more profiles; at most one with a compute part")
      ->required()
      ->expected(2, -1);
  cmd->add_option("--out", *out, "the merged profile to write")->required();
  cmd->callback([inputs, out, &exit_code] {
    sim::Profile merged = sim::read_profile(inputs->front());
    for (size_t i = 1; i < inputs->size(); ++i) {
      merged = sim::merge_profiles(merged, sim::read_profile((*inputs)[i]));
    }
    sim::write_profile(merged, *out);
    std::cout << fmt::format("wrote {}: {} compute, {} link fits\n", *out,
                             merged.compute ? "with" : "no", merged.links.size());
    exit_code = 0;
  });
}

}  // namespace

void add_profile_commands(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ComputeFlags>();
  auto* cmd = app.add_subcommand(
      "profile", "Measure a model's layers on one process (--model), or the links ('links')");
  cmd->require_subcommand(0, 1);
  add_compute_flags(*cmd, *flags);
  add_links_command(*cmd, exit_code);
  add_merge_command(*cmd, exit_code);
  cmd->callback([cmd, flags, &exit_code] {
    if (!cmd->get_subcommands().empty()) return;  // links or merge ran
    run_compute(*flags);
    exit_code = 0;
  });
}

}  // namespace tandem::lab
