// The pipeline's step: every stage simulated, running its schedule's
// actions in order (StrategySpec::schedule, from parallel::pipeline_schedule)
// on its compute stream. A forward of micro-batch j on stage s waits for the
// activations of j from stage s - 1; a backward waits for the gradient of j
// from stage s + 1; each transfer is one point-to-point message on the link
// between the two stages, in the order the sender produces them. Then each
// stage all-reduces its gradients across the data-parallel replicas and
// steps its optimizer. Replicas are alike, so one is simulated; its stage's
// slowdown is the largest among the replicas of that stage.
#include <algorithm>
#include <string>

#include "sim/step_context.h"
#include "tandem/core/check.h"

namespace tandem::sim::detail {
namespace {

struct StageSums {
  double forward_s = 0, backward_s = 0, param_bytes = 0, output_bytes = 0;
};

std::vector<StageSums> stage_sums(const StepContext& ctx) {
  const auto& starts = ctx.strategy.stage_starts;
  const int p = ctx.strategy.stages;
  const int layers = static_cast<int>(ctx.forward_s.size());
  std::vector<StageSums> sums(p);
  for (int s = 0; s < p; ++s) {
    const int end = s + 1 < p ? starts[s + 1] : layers;
    for (int l = starts[s]; l < end; ++l) {
      sums[s].forward_s += ctx.forward_s[l];
      sums[s].backward_s += ctx.backward_s[l];
      sums[s].param_bytes += static_cast<double>(ctx.profile.layers[l].param_bytes);
    }
    sums[s].output_bytes = ctx.profile.layers[end - 1].output_bytes * ctx.batch_scale;
  }
  return sums;
}

}  // namespace

StepOutcome pipeline_step(const StepContext& ctx, Slowdowns& slow, int steps) {
  const StrategySpec& st = ctx.strategy;
  const int p = st.stages;
  const int m = st.micro_batches;
  const int dp = ctx.processes / p;
  const auto sums = stage_sums(ctx);
  double total_param_bytes = 0;
  for (const auto& s : sums) total_param_bytes += s.param_bytes;
  StepOutcome out;
  double total = 0;
  for (int step = 0; step < steps; ++step) {
    TaskGraph g;
    std::vector<TaskGraph::ResourceId> cpu(p), comm(p), to_next(p), to_prev(p);
    for (int s = 0; s < p; ++s) {
      const std::string who = fmt::format("stage {}", s);
      cpu[s] = g.add_resource(who, "compute");
      comm[s] = g.add_resource(who, "comm (data parallel)");
      to_next[s] = g.add_resource(who, "send activations");
      to_prev[s] = g.add_resource(who, "send gradients");
    }
    // fwd[s][j], bwd[s][j]: the compute tasks; sent_*: the transfers.
    std::vector<std::vector<int>> fwd(p, std::vector<int>(m, -1)), bwd = fwd, sent_fwd = fwd,
                                                                    sent_bwd = fwd;
    for (int s = 0; s < p; ++s) {
      const double factor = slow.draw_max(s, dp, p);  // the replicas' ranks of stage s
      const double loss_s = s == p - 1 ? ctx.other_s / m : 0;
      for (const StageAction& a : st.schedule[s]) {
        const int j = a.micro_batch;
        if (a.forward) {
          fwd[s][j] = g.add_task(fmt::format("forward mb {}", j),
                                 (sums[s].forward_s / m + loss_s) * factor, {cpu[s]});
        } else {
          bwd[s][j] = g.add_task(fmt::format("backward mb {}", j),
                                 sums[s].backward_s / m * factor, {cpu[s]}, {fwd[s][j]});
        }
      }
    }
    for (int s = 0; s < p; ++s) {
      const double act_s = ctx.net.op_s(LinkOp::kSendRecv, sums[s].output_bytes / m, 2, s);
      for (const StageAction& a : st.schedule[s]) {
        const int j = a.micro_batch;
        if (a.forward && s + 1 < p) {
          sent_fwd[s][j] = g.add_task(fmt::format("send activations mb {}", j), act_s,
                                      {to_next[s]}, {fwd[s][j]});
          g.add_dependency(fwd[s + 1][j], sent_fwd[s][j]);
        } else if (!a.forward && s > 0) {
          const double grad_s =
              ctx.net.op_s(LinkOp::kSendRecv, sums[s - 1].output_bytes / m, 2, s - 1);
          sent_bwd[s][j] = g.add_task(fmt::format("send gradients mb {}", j), grad_s,
                                      {to_prev[s]}, {bwd[s][j]});
          g.add_dependency(bwd[s - 1][j], sent_bwd[s][j]);
        }
      }
    }
    for (int s = 0; s < p; ++s) {
      std::vector<int> done(bwd[s].begin(), bwd[s].end());
      if (dp > 1) {
        done = {g.add_task("all_reduce stage gradients",
                           ctx.net.op_s(LinkOp::kAllReduce, sums[s].param_bytes, dp), {comm[s]},
                           done)};
      }
      g.add_task("optimizer", ctx.optimizer_s * sums[s].param_bytes / total_param_bytes, {cpu[s]},
                 done);
    }
    auto timing = g.run();
    double end = 0;
    for (const auto& t : timing) end = std::max(end, t.end_s);
    total += end;
    if (step == 0) {
      out.graph = std::move(g);
      out.timing = std::move(timing);
    }
  }
  out.step_s = total / steps;
  double busiest = 0;
  for (const auto& s : sums) busiest = std::max(busiest, s.forward_s + s.backward_s);
  out.compute_s = busiest + ctx.other_s +
                  ctx.optimizer_s * (sums.empty() ? 0 : sums.back().param_bytes) /
                      std::max(total_param_bytes, 1.0);
  return out;
}

}  // namespace tandem::sim::detail
