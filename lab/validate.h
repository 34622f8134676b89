// `tandem lab validate`: the simulator's predictions beside real runs. For
// each case of a table (strategy, processes, one host over shared memory or
// two hosts in network namespaces over a tc-shaped veth, an optional
// straggler) it runs `tandem train` for real under tandem-run and measures
// the step time, and predicts the same configuration with the simulator from
// profiles taken beforehand and separately: compute on 1 process, links on 2
// (so 3 and 4 process predictions come from 1-2 process measurements). The
// plain alpha-beta ring formula's prediction stands beside each, so that the
// simulator's gain over the textbook is measured.
//
// Runs processes one configuration at a time (the machine is small and the
// timings are the point): nothing else should run beside it. Not
// thread-safe; nothing collective.
#pragma once

#include <chrono>
#include <iosfwd>
#include <string>
#include <vector>

namespace tandem::lab {

struct ValidationCase {
  std::string name = {};      // "ddp-3-shm"
  std::string model = {};     // a zoo model
  std::string strategy = {};  // a --strategy of tandem simulate (pipeline: --mesh below)
  int processes = 2;
  int hosts = 1;          // 1: one host, shared memory; 2: two namespaces, Gloo between
  std::string rate = {};  // hosts = 2: the link's tc tbf rate ("1gbit", "200mbit")
  // hosts = 2: one-way latency added to the link (a DelayLink in place of the
  // veth); 0: none.
  std::chrono::microseconds delay{0};
  std::string slowdown = {};  // --inject-slowdown, e.g. "ranks=1,factor=2"; "": none
  std::string mesh = {};      // --mesh for pipelines ("pp=2", "dp=2,pp=2"); "": none
};

// The built-in table: ddp, zero3, ps, gossip on 2-4 processes over shared
// memory; 1F1B pipelines; a straggler; and Gloo between two namespaces at
// 1 Gbit/s and 200 Mbit/s.
std::vector<ValidationCase> default_cases();

struct ValidationOptions {
  std::string tandem;      // the tandem binary
  std::string tandem_run;  // the tandem-run binary
  std::string dir;         // profiles, metrics, clusters and results go here
  int64_t batch_size = 32;
  int steps = 60;         // steps per real run
  int warmup_steps = 20;  // the first steps are not measured
  // Profile-then-run rounds per case; the medians count. This machine
  // drifts between states (docs/lab.md), so one round says little.
  int rounds = 3;
  std::vector<std::string> only;  // case names to run; empty: all
};

struct ValidationRow {
  ValidationCase config;
  // Medians over the rounds; the rounds' own figures beside them.
  double measured_s = 0;
  double predicted_s = 0;
  double textbook_s = 0;
  std::vector<double> measured_rounds = {}, predicted_rounds = {};
  std::string skipped = {};  // why it did not run (no root for namespaces), or ""
  double error() const { return (predicted_s - measured_s) / measured_s; }
  double textbook_error() const { return (textbook_s - measured_s) / measured_s; }
};

// Profiles, runs and predicts every selected case, printing progress to
// `log`. Throws tandem::Error naming the case and the command, with the
// tail of its output, when a real run or a profile fails.
std::vector<ValidationRow> run_validation(const ValidationOptions& options,
                                          const std::vector<ValidationCase>& cases,
                                          std::ostream& log);

}  // namespace tandem::lab
