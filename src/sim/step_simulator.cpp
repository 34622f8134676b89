#include "tandem/sim/step_simulator.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "sim/step_context.h"
#include "tandem/core/check.h"

namespace tandem::sim {
namespace {

using detail::check_inputs;
using detail::make_context;
using detail::StepContext;
using detail::StepOutcome;


int64_t memory_bytes(const StepContext& ctx) {
  const StrategySpec& st = ctx.strategy;
  const double p = ctx.param_bytes;
  const double k = st.optimizer_state_factor;
  const double n = ctx.workers;
  double activations = 0, largest_unit = 0;
  for (const LayerProfile& l : ctx.profile.layers) {
    activations += static_cast<double>(l.activation_bytes) * ctx.batch_scale;
    largest_unit = std::max(largest_unit, static_cast<double>(l.param_bytes));
  }
  double bytes = 0;
  switch (st.kind) {
    case SimStrategy::kZero1: bytes = 2 * p + k * p / n; break;
    case SimStrategy::kZero2: bytes = p + (1 + k) * p / n; break;
    case SimStrategy::kZero3: bytes = (2 + k) * p / n + (1 + st.prefetch) * largest_unit; break;
    case SimStrategy::kPs:
      bytes = std::max(2 * p, (1 + k) * p / st.servers);  // a worker, or a server
      break;
    case SimStrategy::kGossip: bytes = (3 + k) * p; break;  // + the peer's parameters
    case SimStrategy::kPipeline: {
      // The first stage holds the most micro-batches in flight.
      const double in_flight = std::min<double>(st.micro_batches, st.stages);
      const double stage_share = 1.0 / st.stages;
      return static_cast<int64_t>((2 + k) * p * stage_share +
                                  activations * stage_share * in_flight / st.micro_batches);
    }
    default: bytes = (2 + k) * p; break;
  }
  return static_cast<int64_t>(bytes + activations);
}

// All compute, then the textbook formula for the strategy's traffic, over
// the point-to-point link, with no overlap and no contention.
double textbook_step_s(const StepContext& ctx, const StepOutcome& outcome) {
  const Network& net = ctx.net;
  const double p = ctx.param_bytes;
  const int n = ctx.workers;
  const StrategySpec& st = ctx.strategy;
  switch (st.kind) {
    case SimStrategy::kNone: return ctx.compute_s();
    case SimStrategy::kZero1:  // all-reduce + all-gather; zero3: two gathers + a reduce-scatter
    case SimStrategy::kZero3: return ctx.compute_s() + 1.5 * net.textbook_all_reduce_s(p, n);
    case SimStrategy::kPs:  // a push and a pull of all the parameters
      return outcome.compute_s + 2 * net.textbook_message_s(p, ctx.processes);
    case SimStrategy::kGossip:  // one exchange with a peer
      return outcome.compute_s + net.textbook_message_s(p, n);
    case SimStrategy::kLocalSgd:
      return ctx.compute_s() + net.textbook_all_reduce_s(p, n) / std::max(st.sync_every, 1);
    case SimStrategy::kPipeline: {
      const double stage = (ctx.compute_s() - ctx.optimizer_s) / st.stages;
      return (st.micro_batches + st.stages - 1) * stage / st.micro_batches +
             net.textbook_all_reduce_s(p / st.stages, ctx.processes / st.stages) +
             ctx.optimizer_s / st.stages;
    }
    default: return ctx.compute_s() + net.textbook_all_reduce_s(p, n);
  }
}

void fill_goodput(const ClusterSpec& c, int processes, SimResult& r) {
  const FailureSpec& f = c.failures;
  if (f.mttf_node_s <= 0) return;
  const int nodes = (processes + c.devices_per_node - 1) / c.devices_per_node;
  const double mttf = f.mttf_node_s / nodes;
  const double tau = f.checkpoint_interval_s > 0
                         ? f.checkpoint_interval_s
                         : young_daly_interval_s(f.checkpoint_write_s, mttf);
  r.checkpoint_interval_s = tau;
  const double writing = tau / (tau + f.checkpoint_write_s);
  // Restart-all loses half an interval of work on average, plus recovery;
  // keep-survivors redoes one step, plus its (shorter) recovery.
  const double lost_restart = (f.restart_all_recovery_s + (tau + f.checkpoint_write_s) / 2) / mttf;
  const double lost_keep = (f.keep_survivors_recovery_s + r.step_s) / mttf;
  r.goodput_restart_all = std::max(0.0, writing * (1 - lost_restart));
  r.goodput_keep_survivors = std::max(0.0, writing * (1 - lost_keep));
}

}  // namespace

double young_daly_interval_s(double write_s, double mttf_s) {
  TANDEM_CHECK(write_s >= 0 && mttf_s > 0,
               "Young/Daly needs a checkpoint write >= 0 s and an MTTF > 0 s (got {} and {})",
               write_s, mttf_s);
  if (write_s >= 2 * mttf_s) return mttf_s;
  return std::max(std::sqrt(2 * write_s * mttf_s) - write_s, write_s);
}

SimResult simulate(const ComputeProfile& profile, const std::vector<LinkFit>& links,
                   const ClusterSpec& cluster, const StrategySpec& strategy, int processes,
                   const SimOptions& options) {
  check_inputs(profile, strategy, processes);
  TANDEM_CHECK(options.steps >= 1, "simulate: --steps must be at least 1 (got {})", options.steps);
  const Network net(cluster, links);
  const StepContext ctx = make_context(profile, cluster, strategy, net, processes);
  detail::Slowdowns slow(cluster, options.seed, ctx.workers, profile);
  StepOutcome outcome;
  switch (strategy.kind) {
    case SimStrategy::kPs: outcome = detail::parameter_server_step(ctx, slow, options.steps + 1); break;
    case SimStrategy::kPipeline: outcome = detail::pipeline_step(ctx, slow, options.steps); break;
    default: outcome = detail::data_parallel_step(ctx, slow, options.steps); break;
  }
  if (!options.trace_path.empty()) write_trace(outcome.graph, outcome.timing, options.trace_path);

  SimResult r;
  r.processes = processes;
  r.workers = ctx.workers;
  r.step_s = outcome.step_s;
  r.compute_s = outcome.compute_s;
  r.exposed_comm_s = std::max(0.0, r.step_s - r.compute_s);
  const int64_t batch = strategy.batch_size > 0 ? strategy.batch_size : profile.batch_size;
  const int replicas =
      strategy.kind == SimStrategy::kPipeline ? processes / strategy.stages : ctx.workers;
  r.samples_per_s = replicas * static_cast<double>(batch) / r.step_s;
  // One process of speed compute_speed alone, with the whole model.
  ClusterSpec alone = cluster;
  alone.cores_per_node = 0;
  const StepContext single = make_context(profile, alone, strategy, net, 1);
  const double single_samples_per_s = static_cast<double>(batch) / single.compute_s();
  r.efficiency = r.samples_per_s / (processes * single_samples_per_s);
  r.memory_bytes = memory_bytes(ctx);
  r.textbook_step_s = textbook_step_s(ctx, outcome);
  fill_goodput(cluster, processes, r);
  return r;
}

}  // namespace tandem::sim
