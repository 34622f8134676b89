// `tandem lab validate`: the validation table (lab/validate.h) as a table
// and JSON lines, with the summary the scaling lab is judged by: the median
// and worst absolute step-time error, the simulator's beside the textbook's.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench/training_steps.h"
#include "lab/lab.h"
#include "lab/simulate_run.h"
#include "lab/validate.h"
#include "tandem/core/check.h"

namespace tandem::lab {
namespace {

struct ValidateFlags {
  ValidationOptions options;
  std::string cases;
  bool list = false;
  std::string json;
};

// The binaries beside this one (build/tools/).
std::string sibling(const std::string& name) {
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / name).string();
}

void summarize(const std::vector<ValidationRow>& rows, std::ostream& out) {
  std::vector<double> sim, book;
  const ValidationRow* worst = nullptr;
  for (const auto& r : rows) {
    if (!r.skipped.empty()) continue;
    sim.push_back(std::abs(r.error()));
    book.push_back(std::abs(r.textbook_error()));
    if (!worst || std::abs(r.error()) > std::abs(worst->error())) worst = &r;
  }
  TANDEM_CHECK(!sim.empty(), "lab validate: no case ran");
  out << fmt::format("# {} cases: median |error| {:.1f}% (textbook {:.1f}%), worst {:.1f}% ({})\n",
                     sim.size(), bench::median(sim) * 100, bench::median(book) * 100,
                     std::abs(worst->error()) * 100, worst->config.name);
}

nlohmann::json row_json(const ValidationRow& r) {
  const ValidationCase& c = r.config;
  nlohmann::json j = {{"lab", "validate"},        {"case", c.name},
                      {"model", c.model},         {"strategy", c.strategy},
                      {"processes", c.processes}, {"hosts", c.hosts},
                      {"rate", c.rate},           {"delay_us", c.delay.count()},
                      {"slowdown", c.slowdown},   {"mesh", c.mesh},
                      {"profile_processes", 2}};
  if (!r.skipped.empty()) {
    j["skipped"] = r.skipped;
    return j;
  }
  j["measured_step_s"] = r.measured_s;
  j["measured_rounds_s"] = r.measured_rounds;
  j["predicted_rounds_s"] = r.predicted_rounds;
  j["predicted_step_s"] = r.predicted_s;
  j["error"] = r.error();
  j["textbook_step_s"] = r.textbook_s;
  j["textbook_error"] = r.textbook_error();
  return j;
}

int run(const ValidateFlags& f) {
  std::vector<ValidationCase> cases = default_cases();
  if (f.list) {
    for (const auto& c : cases) std::cout << c.name << "\n";
    return 0;
  }
  ValidationOptions o = f.options;
  if (!f.cases.empty()) {
    o.only = split_list(f.cases, "lab validate: --cases");
    for (const auto& name : o.only) {
      TANDEM_CHECK(std::any_of(cases.begin(), cases.end(), [&](auto& c) { return c.name == name; }),
                   "lab validate: --cases names '{}', not a case (see --list)", name);
    }
  }
  if (o.tandem.empty()) o.tandem = sibling("tandem");
  if (o.tandem_run.empty()) o.tandem_run = sibling("tandem-run");
  const auto rows = run_validation(o, cases, std::cout);
  std::ofstream json(f.json.empty() ? o.dir + "/validate.jsonl" : f.json);
  TANDEM_CHECK(json.good(), "lab validate: cannot write the JSON lines");
  for (const auto& r : rows) json << row_json(r).dump() << "\n";
  summarize(rows, std::cout);
  return 0;
}

}  // namespace

void add_lab_commands(CLI::App& app, int& exit_code) {
  auto* lab = app.add_subcommand("lab", "The scaling lab: check the simulator against real runs");
  lab->require_subcommand(1);
  auto f = std::make_shared<ValidateFlags>();
  f->options.dir = "lab-validate";
  auto* cmd = lab->add_subcommand(
      "validate", "Run the validation table: real runs beside the simulator's predictions");
  cmd->add_option("--cases", f->cases, "comma list of case names (default: all; see --list)");
  cmd->add_flag("--list", f->list, "print the case names and stop");
  cmd->add_option("--dir", f->options.dir, "profiles, metrics and results")->capture_default_str();
  cmd->add_option("--batch-size", f->options.batch_size, "per rank")->capture_default_str();
  cmd->add_option("--steps", f->options.steps, "steps per real run (a multiple of 5)")
      ->capture_default_str();
  cmd->add_option("--warmup-steps", f->options.warmup_steps, "steps not measured")
      ->capture_default_str();
  cmd->add_option("--rounds", f->options.rounds, "profile-then-run rounds per case; medians count")
      ->capture_default_str();
  cmd->add_option("--json", f->json, "JSON lines (default: DIR/validate.jsonl)");
  cmd->callback([f, &exit_code] { exit_code = run(*f); });
  add_converge_command(*lab, exit_code);
}

}  // namespace tandem::lab
