// The parameter server's steps: every worker and every server simulated,
// because they are not alike. A worker computes, pushes its gradient shard
// to each server, and waits for the fresh shard back; a server applies each
// push in arrival order. The servers' NICs are unordered resources, so
// pushes from many workers queue there (incast) in the order they arrive,
// and a slow worker does not hold up the others. With a staleness bound s, a
// worker's step i gets its parameters only once every worker has pushed
// step i - s (stale synchronous parallel).
#include <algorithm>
#include <string>

#include "sim/step_context.h"
#include "tandem/core/check.h"

namespace tandem::sim::detail {

StepOutcome parameter_server_step(const StepContext& ctx, Slowdowns& slow, int steps) {
  const int servers = ctx.strategy.servers;
  const int workers = ctx.workers;
  TaskGraph g;
  std::vector<TaskGraph::ResourceId> cpu(workers), nic(workers);
  for (int w = 0; w < workers; ++w) {
    const std::string who = fmt::format("worker {}", w);
    cpu[w] = g.add_resource(who, "compute");
    nic[w] = g.add_resource(who, "nic");
  }
  std::vector<TaskGraph::ResourceId> apply_lane(servers), in(servers), out(servers);
  for (int k = 0; k < servers; ++k) {
    const std::string who = fmt::format("server {}", k);
    apply_lane[k] = g.add_resource(who, "optimizer", /*ordered=*/false);
    in[k] = g.add_resource(who, "nic in", false);
    out[k] = g.add_resource(who, "nic out", false);
  }
  const double shard_bytes = ctx.param_bytes / servers;
  const double shard_optimizer_s = ctx.optimizer_s / servers;
  double compute = ctx.other_s;
  for (size_t l = 0; l < ctx.forward_s.size(); ++l) compute += ctx.forward_s[l] + ctx.backward_s[l];

  std::vector<std::vector<int>> pulled(workers);  // the pulls of the previous step
  std::vector<int> clock;                          // per step: every worker has pushed
  std::vector<std::vector<std::vector<int>>> pulls_of(workers);  // [worker][step]
  for (int i = 0; i < steps; ++i) {
    std::vector<int> pushed;
    for (int w = 0; w < workers; ++w) {
      const int c = g.add_task(fmt::format("compute step {}", i), compute * slow.draw(w), {cpu[w]},
                               pulled[w]);
      pulled[w].clear();
      for (int k = 0; k < servers; ++k) {
        const int server_rank = workers + k;
        const double msg = ctx.net.op_s(LinkOp::kSendRecv, shard_bytes, server_rank - w + 1, w);
        const int push = g.add_task(fmt::format("push step {} to server {}", i, k), msg,
                                    {nic[w], in[k]}, {c});
        pushed.push_back(push);
        const int apply = g.add_task(fmt::format("apply worker {} step {}", w, i),
                                     shard_optimizer_s, {apply_lane[k]}, {push});
        const int pull = g.add_task(fmt::format("pull step {} from server {}", i, k), msg,
                                    {out[k], nic[w]}, {apply});
        const int bound = ctx.strategy.staleness;
        if (bound >= 0 && i - bound >= 0 && i - bound < static_cast<int>(clock.size())) {
          g.add_dependency(pull, clock[i - bound]);
        }
        pulled[w].push_back(pull);
      }
      pulls_of[w].push_back(pulled[w]);
    }
    const auto clock_lane = g.add_resource("staleness", fmt::format("clock {}", i));
    clock.push_back(g.add_task(fmt::format("all pushed step {}", i), 0, {clock_lane}, pushed));
  }
  StepOutcome outcome;
  outcome.timing = g.run();
  // Steady state: a worker's step is the time between the ends of its first
  // and last steps over the steps between (the first is warm-up).
  // A step ends when the pull from the last server is in.
  auto end_of = [&](const std::vector<int>& pulls) {
    double end = 0;
    for (int id : pulls) end = std::max(end, outcome.timing[id].end_s);
    return end;
  };
  double sum = 0;
  for (int w = 0; w < workers; ++w) {
    const double last = end_of(pulls_of[w].back());
    sum += steps > 1 ? (last - end_of(pulls_of[w].front())) / (steps - 1) : last;
  }
  outcome.step_s = sum / workers;
  outcome.compute_s = compute;
  outcome.graph = std::move(g);
  return outcome;
}

}  // namespace tandem::sim::detail
