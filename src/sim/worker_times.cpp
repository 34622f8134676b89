#include "tandem/sim/worker_times.h"

#include <numeric>

#include "sim/step_context.h"
#include "tandem/sim/network.h"

namespace tandem::sim {

// The inputs live here, so that the context's references stay valid.
struct WorkerTimes::State {
  ComputeProfile profile;
  std::vector<LinkFit> links;
  ClusterSpec cluster;
  StrategySpec strategy;
  Network net;
  detail::StepContext ctx;
  detail::Slowdowns slow;
  double gradient_s = 0;  // forward + the rest + backward at speed 1

  State(ComputeProfile p, std::vector<LinkFit> l, ClusterSpec c, StrategySpec st, int processes,
        uint64_t seed)
      : profile(std::move(p)),
        links(std::move(l)),
        cluster(std::move(c)),
        strategy(std::move(st)),
        net(cluster, links),
        ctx(detail::make_context(profile, cluster, strategy, net, processes)),
        slow(cluster, seed, ctx.workers, profile) {
    gradient_s = ctx.other_s + std::accumulate(ctx.forward_s.begin(), ctx.forward_s.end(), 0.0) +
                 std::accumulate(ctx.backward_s.begin(), ctx.backward_s.end(), 0.0);
  }
};

namespace {
ComputeProfile checked(ComputeProfile p, const StrategySpec& st, int processes) {
  detail::check_inputs(p, st, processes);
  return p;
}
}  // namespace

WorkerTimes::WorkerTimes(ComputeProfile profile, std::vector<LinkFit> links, ClusterSpec cluster,
                         StrategySpec strategy, int processes, uint64_t seed)
    : s_(std::make_unique<State>(checked(std::move(profile), strategy, processes), std::move(links),
                                 std::move(cluster), std::move(strategy), processes, seed)) {}

WorkerTimes::~WorkerTimes() = default;

double WorkerTimes::local_step_s(int rank) {
  return (s_->gradient_s + s_->ctx.optimizer_s) * s_->slow.draw(rank);
}

double WorkerTimes::gradient_s(int rank) { return s_->gradient_s * s_->slow.draw(rank); }

double WorkerTimes::server_step_s() const {
  return s_->ctx.optimizer_s / std::max(s_->strategy.servers, 1);
}

double WorkerTimes::op_s(LinkOp op, double bytes, int n, int first) const {
  return s_->net.op_s(op, bytes, n, first);
}

double WorkerTimes::sync_step_s() {
  return detail::data_parallel_step(s_->ctx, s_->slow, 1).step_s;
}

double WorkerTimes::param_bytes() const { return s_->ctx.param_bytes; }

int WorkerTimes::workers() const { return s_->ctx.workers; }

}  // namespace tandem::sim
