#include "lab/strategy_from_options.h"

#include <fmt/format.h>

#include <string>

#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/parallel/pipeline_schedule.h"

namespace tandem::lab {
namespace {

std::string top_level(const std::string& name) { return name.substr(0, name.find('.')); }

sim::SimStrategy kind_of(const train::TrainerOptions& o) {
  using train::StrategyKind;
  const auto& st = o.strategy;
  const bool mesh = o.mesh.shape && o.mesh.shape->size() > 1;
  if (mesh) {
    if (o.mesh.shape->tp > 1) {
      throw NotSupported(
          "simulate: tensor parallelism (--mesh tp=N) is not modelled yet; pp=N and the "
          "data-parallel strategies are");
    }
    if (o.mesh.shape->pp > 1) return sim::SimStrategy::kPipeline;
  }
  if (st.ddp.compression != train::GradCompression::kNone) {
    throw NotSupported("simulate: --grad-compression is not modelled yet");
  }
  if (st.async.backup_workers > 0) {
    throw NotSupported("simulate: --backup-workers is not modelled yet");
  }
  switch (st.kind) {
    case StrategyKind::kNone: return sim::SimStrategy::kNone;
    case StrategyKind::kDdp: return sim::SimStrategy::kDdp;
    case StrategyKind::kZero1: return sim::SimStrategy::kZero1;
    case StrategyKind::kZero2: return sim::SimStrategy::kZero2;
    case StrategyKind::kZero3: return sim::SimStrategy::kZero3;
    case StrategyKind::kPs: return sim::SimStrategy::kPs;
    case StrategyKind::kGossip: return sim::SimStrategy::kGossip;
    case StrategyKind::kLocalSgd: return sim::SimStrategy::kLocalSgd;
    case StrategyKind::kEasgd: break;
  }
  throw NotSupported(fmt::format(
      "simulate: --strategy {} is not modelled yet; none, ddp, zero1, zero2, zero3, ps, gossip, "
      "local-sgd and pipelines (--mesh pp=N) are",
      train::name_of(st.kind)));
}

void fill_pipeline(const train::TrainerOptions& o, const sim::ComputeProfile& profile,
                   sim::StrategySpec& s) {
  s.stages = o.mesh.shape->pp;
  s.micro_batches = o.mesh.micro_batches;
  const std::vector<int> groups = top_level_groups(profile);
  TANDEM_CHECK(static_cast<int>(groups.size()) >= s.stages,
               "simulate: --mesh pp={} needs at least {} blocks of layers; the profile of {} has {}",
               s.stages, s.stages, profile.model, groups.size());
  std::vector<int64_t> numel;
  for (size_t g = 0; g < groups.size(); ++g) {
    const size_t end = g + 1 < groups.size() ? groups[g + 1] : profile.layers.size();
    int64_t bytes = 0;
    for (size_t l = groups[g]; l < end; ++l) bytes += profile.layers[l].param_bytes;
    numel.push_back(bytes);
  }
  for (int cut : parallel::balanced_cut_points(numel, s.stages)) s.stage_starts.push_back(groups[cut]);
  for (int st = 0; st < s.stages; ++st) {
    s.schedule.emplace_back();
    for (const auto& a : parallel::pipeline_schedule(o.mesh.schedule, st, s.stages,
                                                     s.micro_batches)) {
      s.schedule.back().push_back({a.forward, a.micro_batch});
    }
  }
}

}  // namespace

std::vector<int> top_level_groups(const sim::ComputeProfile& profile) {
  std::vector<int> starts;
  for (size_t l = 0; l < profile.layers.size(); ++l) {
    if (l == 0 || top_level(profile.layers[l].name) != top_level(profile.layers[l - 1].name)) {
      starts.push_back(static_cast<int>(l));
    }
  }
  return starts;
}

sim::StrategySpec strategy_from_options(const train::TrainerOptions& o,
                                        const sim::ComputeProfile& profile) {
  sim::StrategySpec s;
  s.kind = kind_of(o);
  s.batch_size = o.run.batch_size;
  s.bucket_bytes = static_cast<int64_t>(o.strategy.bucket_cap_mb * (1 << 20));
  s.optimizer_state_factor = o.optimizer.kind == train::OptimizerKind::kAdamW ? 2.0
                             : o.optimizer.momentum > 0                       ? 1.0
                                                                              : 0.0;
  s.servers = o.strategy.async.servers;
  s.staleness = static_cast<int>(o.strategy.async.staleness);
  s.sync_every = static_cast<int>(o.strategy.async.sync_every);
  s.log_every = static_cast<int>(o.observe.log_every);
  if (s.kind == sim::SimStrategy::kZero3) {
    const auto& wrap = o.strategy.zero.wrap;
    if (wrap.automatic) {
      s.unit_starts = top_level_groups(profile);
    } else if (wrap.module_types.empty() && wrap.module_names.empty() && wrap.min_num_params == 0) {
      s.unit_starts = {0};  // none: one unit
    } else {
      throw NotSupported(fmt::format(
          "simulate: --wrap-policy {} is not modelled yet; auto and none are",
          train::describe(wrap)));
    }
  }
  if (s.kind == sim::SimStrategy::kPipeline) fill_pipeline(o, profile, s);
  s.describe = std::string(sim::name_of(s.kind));
  return s;
}

}  // namespace tandem::lab
