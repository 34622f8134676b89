#include "sim/step_context.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tandem/core/check.h"

namespace tandem::sim {

std::string_view name_of(SimStrategy s) {
  switch (s) {
    case SimStrategy::kNone: return "none";
    case SimStrategy::kDdp: return "ddp";
    case SimStrategy::kZero1: return "zero1";
    case SimStrategy::kZero2: return "zero2";
    case SimStrategy::kZero3: return "zero3";
    case SimStrategy::kPs: return "ps";
    case SimStrategy::kGossip: return "gossip";
    case SimStrategy::kLocalSgd: return "local-sgd";
    case SimStrategy::kPipeline: return "pipeline";
  }
  return "?";
}

namespace detail {

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
    case SlowdownDistribution::kNone: return 1;
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
