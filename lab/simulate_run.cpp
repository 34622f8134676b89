#include "lab/simulate_run.h"

#include <fmt/format.h>
#include <torch/nn/module.h>

#include <charconv>
#include <sstream>

#include "lab/profile_compute.h"
#include "tandem/core/check.h"
#include "tandem/train/models/models.h"

namespace tandem::lab {
namespace {

int parse_positive(const std::string& text, const std::string& what, const std::string& whole) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  TANDEM_CHECK(ec == std::errc() && end == text.data() + text.size() && value >= 1,
               "{} takes processes >= 1 as '2,3,4' or '2..4096' (got '{}')", what, whole);
  return value;
}

}  // namespace

void check_model_version(const sim::ComputeProfile& profile, const std::string& source) {
  torch::nn::AnyModule model = train::make_model(train::model_kind(profile.model));
  if (profile.dtype == "float64") model.ptr()->to(at::kDouble);
  const std::string now = model_version(*model.ptr());
  TANDEM_CHECK(now == profile.model_version,
               "profile '{}': field 'model_version' is {}, but this Tandem's {} is {}: the model "
               "changed since it was profiled; run `tandem profile --model {}` again",
               source, profile.model_version, profile.model, now, profile.model);
}

SimulationInputs load_profiles(const std::vector<std::string>& profile_paths) {
  TANDEM_CHECK(!profile_paths.empty(), "simulate: give at least one --profile");
  SimulationInputs in;
  sim::Profile merged;
  std::string compute_source;
  for (const std::string& path : profile_paths) {
    sim::Profile p = sim::read_profile(path);
    if (p.compute) compute_source = path;
    merged = sim::merge_profiles(merged, p);
    in.profile_source += (in.profile_source.empty() ? "" : ", ") + path;
  }
  TANDEM_CHECK(merged.compute.has_value(),
               "simulate: no --profile has a compute part ({}); write one with `tandem profile "
               "--model M --batch-size B --out P.json`",
               in.profile_source);
  check_model_version(*merged.compute, compute_source);
  in.compute = std::move(*merged.compute);
  in.links = std::move(merged.links);
  return in;
}

SimulationInputs load_inputs(const std::vector<std::string>& profile_paths,
                             const std::string& cluster_path) {
  SimulationInputs in = load_profiles(profile_paths);
  in.cluster = sim::read_cluster(cluster_path);
  return in;
}

std::string human_bytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes >= (int64_t{1} << 30)) return fmt::format("{:.1f} GiB", b / (1 << 30));
  if (bytes >= (int64_t{1} << 20)) return fmt::format("{:.1f} MiB", b / (1 << 20));
  if (bytes >= (int64_t{1} << 10)) return fmt::format("{:.1f} KiB", b / (1 << 10));
  return fmt::format("{} B", bytes);
}

std::vector<std::string> split_list(const std::string& text, const std::string& what) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    TANDEM_CHECK(!item.empty(), "{}: empty entry in '{}'", what, text);
    out.push_back(item);
  }
  TANDEM_CHECK(!out.empty(), "{}: give at least one entry", what);
  return out;
}

std::vector<int> parse_world_sizes(const std::string& text, const std::string& what) {
  const auto dots = text.find("..");
  if (dots != std::string::npos) {
    const int lo = parse_positive(text.substr(0, dots), what, text);
    const int hi = parse_positive(text.substr(dots + 2), what, text);
    TANDEM_CHECK(lo <= hi, "{}: the range '{}' is empty", what, text);
    std::vector<int> out;
    for (int64_t n = lo; n <= hi; n *= 2) out.push_back(static_cast<int>(n));
    return out;
  }
  std::vector<int> out;
  for (const std::string& item : split_list(text, what)) out.push_back(parse_positive(item, what, text));
  return out;
}

train::TrainerOptions with_strategy(const train::TrainerOptions& base, const std::string& name) {
  train::TrainerOptions o = base;
  if (name == "pipeline") {
    o.strategy.kind = train::StrategyKind::kDdp;
    if (!o.mesh.shape || o.mesh.shape->pp < 2) o.mesh.shape = train::MeshShape{.dp = 1, .pp = 2, .tp = 1};
    return o;
  }
  try {
    o.strategy.kind = train::parse_choice<train::StrategyKind>(name);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("{} (or pipeline, for --mesh pp=N)", e.what()));
  }
  o.mesh.shape.reset();
  return o;
}

std::string unfit_world_size(const sim::StrategySpec& spec, int processes) {
  if (spec.kind == sim::SimStrategy::kPs && processes <= spec.servers) {
    return fmt::format("ps needs more than its {} server(s)", spec.servers);
  }
  if (spec.kind == sim::SimStrategy::kPipeline && processes % spec.stages != 0) {
    return fmt::format("not a multiple of the {} stages", spec.stages);
  }
  return "";
}

nlohmann::json result_json(const SimulationInputs& in, const std::string& strategy,
                           const sim::SimResult& r) {
  return {{"sim", "step"},
          {"model", in.compute.model},
          {"cluster", in.cluster.name},
          {"strategy", strategy},
          {"processes", r.processes},
          {"workers", r.workers},
          {"step_s", r.step_s},
          {"compute_s", r.compute_s},
          {"exposed_comm_s", r.exposed_comm_s},
          {"samples_per_s", r.samples_per_s},
          {"efficiency", r.efficiency},
          {"memory_bytes", r.memory_bytes},
          {"textbook_step_s", r.textbook_step_s},
          {"checkpoint_interval_s", r.checkpoint_interval_s},
          {"goodput_restart_all", r.goodput_restart_all},
          {"goodput_keep_survivors", r.goodput_keep_survivors}};
}

}  // namespace tandem::lab
