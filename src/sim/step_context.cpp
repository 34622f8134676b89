#include "sim/step_context.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tandem/core/check.h"

namespace tandem::sim {

std::string_view name_of(SimStrategy s) {
  switch (s) {
    case SimStrategy::kNone:
      return "none";
    case SimStrategy::kDdp:
      return "ddp";
    case SimStrategy::kZero1:
      return "zero1";
    case SimStrategy::kZero2:
      return "zero2";
    case SimStrategy::kZero3:
      return "zero3";
    case SimStrategy::kPs:
      return "ps";
    case SimStrategy::kGossip:
      return "gossip";
    case SimStrategy::kLocalSgd:
      return "local-sgd";
    case SimStrategy::kPipeline:
      return "pipeline";
  }
  return "?";
}

namespace detail {

void check_inputs(const ComputeProfile& profile, const StrategySpec& st, int processes) {
  TANDEM_CHECK(processes >= 1, "simulate: --workers must be at least 1 (got {})", processes);
  TANDEM_CHECK(!profile.layers.empty() && profile.batch_size > 0,
               "simulate: the profile has no layers or no batch size; write it with `tandem "
               "profile --model M`");
  TANDEM_CHECK(st.batch_size >= 0, "simulate: --batch-size must be >= 1 (got {})", st.batch_size);
  const int layers = static_cast<int>(profile.layers.size());
  if (st.kind == SimStrategy::kPs) {
    TANDEM_CHECK(st.servers >= 1 && processes > st.servers,
                 "simulate: ps needs more processes than --servers ({}), got {}", st.servers,
                 processes);
  }
  if (st.kind == SimStrategy::kPipeline) {
    TANDEM_CHECK(st.stages >= 2 && processes % st.stages == 0,
                 "simulate: a pipeline of {} stages needs a multiple of {} processes, got {}",
                 st.stages, st.stages, processes);
    TANDEM_CHECK(st.stages <= layers, "simulate: {} stages but the profile has {} layers",
                 st.stages, layers);
    TANDEM_CHECK(static_cast<int>(st.stage_starts.size()) == st.stages &&
                     static_cast<int>(st.schedule.size()) == st.stages && st.micro_batches >= 1,
                 "simulate: the pipeline needs one start layer and one schedule per stage");
    for (int s = 0; s < st.stages; ++s) {
      TANDEM_CHECK(
          st.stage_starts[s] >= 0 && st.stage_starts[s] < layers &&
              (s == 0 ? st.stage_starts[s] == 0 : st.stage_starts[s] > st.stage_starts[s - 1]),
          "simulate: stage starts must rise from layer 0 within the {} layers", layers);
    }
  }
  for (size_t u = 0; u < st.unit_starts.size(); ++u) {
    TANDEM_CHECK(st.unit_starts[u] >= 0 && st.unit_starts[u] < layers &&
                     (u == 0 ? st.unit_starts[0] == 0 : st.unit_starts[u] > st.unit_starts[u - 1]),
                 "simulate: zero3 unit starts must rise from layer 0 within the {} layers", layers);
  }
}

// Compute-stream slowdown from the CPU cores that a node's busy ranks
// share: with more ranks than cores the scheduler moves them around, so each
// gets the cores' total speed over the ranks. (With fewer, each rank has a
// core of its own, and Slowdowns applies that core's speed.)
double oversubscription(const ClusterSpec& c, int computing_ranks) {
  const int local = std::min(computing_ranks, c.devices_per_node);
  if (c.cores_per_node <= 0 || local <= c.cores_per_node) return 1;
  double capacity = c.cores_per_node;
  if (!c.core_speeds.empty()) {
    capacity = std::accumulate(c.core_speeds.begin(), c.core_speeds.end(), 0.0);
  }
  return static_cast<double>(local) / capacity;
}

int computing_ranks(const StrategySpec& st, int processes) {
  return st.kind == SimStrategy::kPs ? processes - st.servers : processes;
}

StepContext make_context(const ComputeProfile& profile, const ClusterSpec& cluster,
                         const StrategySpec& st, const Network& net, int processes) {
  StepContext ctx{.profile = profile, .cluster = cluster, .strategy = st, .net = net};
  ctx.processes = processes;
  ctx.workers = computing_ranks(st, processes);
  const int64_t batch = st.batch_size > 0 ? st.batch_size : profile.batch_size;
  ctx.batch_scale = static_cast<double>(batch) / profile.batch_size;
  // Compute grows with the batch; the optimizer does not.
  const double per_sample =
      ctx.batch_scale * oversubscription(cluster, ctx.workers) / cluster.compute_speed;
  for (const LayerProfile& l : profile.layers) {
    ctx.forward_s.push_back(l.forward_s * per_sample);
    ctx.backward_s.push_back(l.backward_s * per_sample);
    ctx.param_bytes += static_cast<double>(l.param_bytes);
  }
  ctx.other_s = profile.other_s * per_sample;
  ctx.optimizer_s =
      profile.optimizer_s * oversubscription(cluster, ctx.workers) / cluster.compute_speed;
  return ctx;
}

double StepContext::compute_s() const {
  return std::accumulate(forward_s.begin(), forward_s.end(), 0.0) +
         std::accumulate(backward_s.begin(), backward_s.end(), 0.0) + other_s + optimizer_s;
}

Slowdowns::Slowdowns(const ClusterSpec& cluster, uint64_t seed, int computing_ranks,
                     const ComputeProfile& profile)
    : cluster_(cluster),
      own_cores_(!cluster.core_speeds.empty() &&
                 std::min(computing_ranks, cluster.devices_per_node) <= cluster.cores_per_node),
      rng_(seed) {
  if (cluster.slowdown != SlowdownDistribution::kProfile) return;
  TANDEM_CHECK(profile.step_times_s.size() >= 2,
               "simulate: the cluster's stragglers take their distribution from the profile, but "
               "the profile of {} has no step_times_s; profile it again with this Tandem",
               profile.model);
  std::vector<double> sorted = profile.step_times_s;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  for (double t : profile.step_times_s) samples_.push_back(t / median);
}

double Slowdowns::node_factor(int rank) const {
  double f = 1;
  const int node = rank / cluster_.devices_per_node;
  for (const SlowNode& s : cluster_.slow_nodes) {
    if (s.node == node) f = std::max(f, s.factor);
  }
  for (const SlowRank& s : cluster_.slow_ranks) {
    if (s.rank == rank) f = std::max(f, s.factor);
  }
  // Rank i of a node on its core i.
  if (own_cores_) f /= cluster_.core_speeds[rank % cluster_.devices_per_node];
  return f;
}

double Slowdowns::sample() {
  switch (cluster_.slowdown) {
    case SlowdownDistribution::kNone:
      return 1;
    case SlowdownDistribution::kLogNormal:
      return std::exp(cluster_.slowdown_sigma * std::normal_distribution<double>()(rng_));
    case SlowdownDistribution::kUniform:
      return std::uniform_real_distribution<double>(1, cluster_.slowdown_max)(rng_);
    case SlowdownDistribution::kProfile:
      return samples_[std::uniform_int_distribution<size_t>(0, samples_.size() - 1)(rng_)];
  }
  return 1;
}

double Slowdowns::draw(int rank) { return node_factor(rank) * sample(); }

double Slowdowns::draw_max(int first, int n, int stride) {
  if (cluster_.slowdown == SlowdownDistribution::kNone && cluster_.slow_nodes.empty() &&
      cluster_.slow_ranks.empty() && !own_cores_) {
    return 1;
  }
  double worst = 0;
  for (int i = 0; i < n; ++i) worst = std::max(worst, draw(first + i * stride));
  return worst;
}

}  // namespace detail
}  // namespace tandem::sim
