// The data-parallel family's step: ddp, zero1, zero2, zero3, gossip,
// local-sgd and a single process. Every rank runs the same graph, so the
// step is simulated for a typical rank and, when stragglers are modelled,
// the slowest rank of the step; the collectives join both, as they join all
// ranks.
#include <algorithm>
#include <numeric>
#include <string>

#include "sim/step_context.h"
#include "tandem/core/check.h"

namespace tandem::sim::detail {
namespace {

// One simulated rank: its compute stream and its communication lanes (a
// second one for ZeRO-3's reduce-scatters, which run on their own
// communicator beside the gathers).
struct Lanes {
  TaskGraph::ResourceId compute, comm, comm2;
  double slowdown;
};

class Builder {
 public:
  Builder(const StepContext& ctx, const std::vector<double>& slowdowns) : ctx_(ctx) {
    for (size_t c = 0; c < slowdowns.size(); ++c) {
      const std::string who = c == 0 ? "typical rank" : "slowest rank";
      lanes_.push_back({g_.add_resource(who, "compute"), g_.add_resource(who, "comm"),
                        g_.add_resource(who, "comm (reduce-scatter)"), slowdowns[c]});
    }
  }

  // The same compute task on every simulated rank; returns one id per rank.
  std::vector<int> compute(const std::string& name, double seconds,
                           const std::vector<std::vector<int>>& deps = {}) {
    std::vector<int> ids;
    for (size_t c = 0; c < lanes_.size(); ++c) {
      ids.push_back(g_.add_task(name, seconds * lanes_[c].slowdown, {lanes_[c].compute},
                                deps.empty() ? std::vector<int>{} : deps[c]));
    }
    return ids;
  }

  // One collective over every rank's lane, after `after` (one task per rank
  // or one shared task).
  int collective(const std::string& name, LinkOp op, double bytes, const std::vector<int>& after,
                 bool second_lane = false) {
    std::vector<TaskGraph::ResourceId> res;
    for (const Lanes& l : lanes_) res.push_back(second_lane ? l.comm2 : l.comm);
    return g_.add_task(name, ctx_.net.op_s(op, bytes, ctx_.workers), res, after);
  }

  // `ids` (one per simulated rank) as every rank's dependency list.
  std::vector<std::vector<int>> each(const std::vector<int>& ids) const {
    std::vector<std::vector<int>> deps;
    for (size_t c = 0; c < lanes_.size(); ++c) deps.push_back({ids.size() == 1 ? ids[0] : ids[c]});
    return deps;
  }

  // One layer's forward (or backward) on every rank, after `after` (one task
  // shared by all, such as a gather); returns one task id per rank.
  void forward(int layer, const std::vector<int>& after = {}) {
    std::vector<std::vector<int>> deps(lanes_.size(), after);
    compute("forward " + ctx_.profile.layers[layer].name, ctx_.forward_s[layer],
            after.empty() ? std::vector<std::vector<int>>{} : deps);
  }
  std::vector<int> backward(int layer, const std::vector<int>& after = {}) {
    std::vector<std::vector<int>> deps(lanes_.size(), after);
    return compute("backward " + ctx_.profile.layers[layer].name, ctx_.backward_s[layer],
                   after.empty() ? std::vector<std::vector<int>>{} : deps);
  }

  TaskGraph& graph() { return g_; }

 private:
  const StepContext& ctx_;
  TaskGraph g_;
  std::vector<Lanes> lanes_;
};

int layers(const StepContext& ctx) { return static_cast<int>(ctx.forward_s.size()); }

// ddp and zero1-3 broadcast the model's buffers from rank 0 once every
// gradient is reduced, before the optimizer steps (one packed broadcast).
int broadcast_buffers(const StepContext& ctx, Builder& b, int after) {
  if (ctx.profile.buffer_bytes == 0 || ctx.workers == 1) return after;
  return b.collective("broadcast buffers", LinkOp::kBroadcast,
                      static_cast<double>(ctx.profile.buffer_bytes),
                      after < 0 ? std::vector<int>{} : std::vector<int>{after});
}

double bytes_of(const StepContext& ctx, const std::vector<int>& layer_ids) {
  double b = 0;
  for (int l : layer_ids) b += static_cast<double>(ctx.profile.layers[l].grad_bytes);
  return b;
}

// ddp, zero1, zero2: buckets reduced as backward fills them, in order.
void bucketed_step(const StepContext& ctx, Builder& b) {
  const SimStrategy kind = ctx.strategy.kind;
  for (int l = 0; l < layers(ctx); ++l) b.forward(l);
  b.compute("loss and the rest", ctx.other_s);
  std::vector<std::vector<int>> ready(layers(ctx));
  for (int l = layers(ctx) - 1; l >= 0; --l) ready[l] = b.backward(l);
  int last = -1;
  const auto buckets = gradient_buckets(ctx.profile, ctx.strategy.bucket_bytes);
  for (size_t k = 0; k < buckets.size(); ++k) {
    const LinkOp op = kind == SimStrategy::kZero2 ? LinkOp::kReduceScatter : LinkOp::kAllReduce;
    last = b.collective(fmt::format("{} bucket {}", name_of(op), k), op, bytes_of(ctx, buckets[k]),
                        ready[buckets[k].back()]);
  }
  last = broadcast_buffers(ctx, b, last);
  const bool sharded = kind == SimStrategy::kZero1 || kind == SimStrategy::kZero2;
  const double optimizer = sharded ? ctx.optimizer_s / ctx.workers : ctx.optimizer_s;
  const auto stepped =
      b.compute("optimizer", optimizer, last < 0 ? std::vector<std::vector<int>>{} : b.each({last}));
  if (sharded) b.collective("all_gather parameters", LinkOp::kAllGather, ctx.param_bytes, stepped);
}

// zero3: per unit, gather before forward and again before backward (the
// next unit's gather launched while the current computes), reduce-scatter
// as soon as the unit's gradients are ready.
void fully_sharded_step(const StepContext& ctx, Builder& b) {
  std::vector<int> starts = ctx.strategy.unit_starts;
  if (starts.empty()) {
    starts.resize(layers(ctx));
    std::iota(starts.begin(), starts.end(), 0);
  }
  const int units = static_cast<int>(starts.size());
  auto first = [&](int u) { return starts[u]; };
  auto end = [&](int u) { return u + 1 < units ? starts[u + 1] : layers(ctx); };
  auto unit_bytes = [&](int u) {
    double bytes = 0;
    for (int l = first(u); l < end(u); ++l) bytes += ctx.profile.layers[l].param_bytes;
    return bytes;
  };
  const int ahead = std::max(ctx.strategy.prefetch, 0);
  std::vector<std::vector<int>> unit_done(units);  // last forward task, per rank
  for (int u = 0; u < units; ++u) {
    std::vector<int> after;
    if (u - 1 - ahead >= 0) after = unit_done[u - 1 - ahead];
    const int gather = b.collective(fmt::format("all_gather unit {}", u), LinkOp::kAllGather,
                                    unit_bytes(u), after);
    for (int l = first(u); l < end(u); ++l) {
      b.forward(l, l == first(u) ? std::vector<int>{gather} : std::vector<int>{});
    }
    unit_done[u] = b.compute(fmt::format("unit {} forward done", u), 0);
  }
  b.compute("loss and the rest", ctx.other_s);
  std::vector<std::vector<int>> backward_done(units);
  int last_rs = -1;
  for (int u = units - 1; u >= 0; --u) {
    std::vector<int> after;
    if (u + 1 + ahead < units) after = backward_done[u + 1 + ahead];
    // The last unit of forward is still gathered when backward starts.
    const int gather = u == units - 1 ? -1
                                      : b.collective(fmt::format("re-gather unit {}", u),
                                                     LinkOp::kAllGather, unit_bytes(u), after);
    std::vector<int> ready;
    for (int l = end(u) - 1; l >= first(u); --l) {
      ready = b.backward(l, l == end(u) - 1 && gather >= 0 ? std::vector<int>{gather}
                                                           : std::vector<int>{});
    }
    backward_done[u] = ready;
    last_rs = b.collective(fmt::format("reduce_scatter unit {}", u), LinkOp::kReduceScatter,
                           unit_bytes(u), ready, /*second_lane=*/true);
  }
  b.compute("optimizer (shard)", ctx.optimizer_s / ctx.workers,
            b.each({broadcast_buffers(ctx, b, last_rs)}));
}

// gossip (one exchange of the parameters with a peer after each step) and
// local-sgd (an average every sync_every steps, amortised per step).
void exchange_step(const StepContext& ctx, Builder& b) {
  for (int l = 0; l < layers(ctx); ++l) b.forward(l);
  b.compute("loss and the rest", ctx.other_s);
  for (int l = layers(ctx) - 1; l >= 0; --l) b.backward(l);
  const auto stepped = b.compute("optimizer", ctx.optimizer_s);
  if (ctx.workers == 1) return;
  if (ctx.strategy.kind == SimStrategy::kGossip) {
    b.collective("gossip exchange", LinkOp::kSendRecv, ctx.param_bytes, stepped);
  } else {
    const int every = std::max(ctx.strategy.sync_every, 1);
    b.collective(fmt::format("all_reduce parameters / {}", every), LinkOp::kAllReduce,
                 ctx.param_bytes / every, stepped);
  }
}

}  // namespace

StepOutcome data_parallel_step(const StepContext& ctx, Slowdowns& slow, int steps) {
  StepOutcome out;
  const SimStrategy kind = ctx.strategy.kind;
  const bool sharded = kind == SimStrategy::kZero1 || kind == SimStrategy::kZero2 ||
                       kind == SimStrategy::kZero3;
  out.compute_s =
      ctx.compute_s() - (sharded ? ctx.optimizer_s * (1 - 1.0 / ctx.workers) : 0.0);
  double total = 0;
  for (int s = 0; s < steps; ++s) {
    std::vector<double> factors = {1.0};
    const double worst = slow.draw_max(0, ctx.workers);
    if (worst > 1.0) factors.push_back(worst);
    Builder b(ctx, factors);
    switch (kind) {
      case SimStrategy::kZero3:
        fully_sharded_step(ctx, b);
        break;
      case SimStrategy::kGossip:
      case SimStrategy::kLocalSgd:
        exchange_step(ctx, b);
        break;
      default:
        bucketed_step(ctx, b);
        break;
    }
    auto timing = b.graph().run();
    double end = 0;
    for (const auto& t : timing) end = std::max(end, t.end_s);
    // The trainer's loss average at its log steps: one all_reduce of a
    // double after the step, every log_every steps.
    if (ctx.strategy.log_every > 0 && ctx.workers > 1) {
      end += ctx.net.op_s(LinkOp::kAllReduce, sizeof(double), ctx.workers) /
             ctx.strategy.log_every;
    }
    total += end;
    if (s == 0) {
      out.graph = std::move(b.graph());
      out.timing = std::move(timing);
    }
  }
  out.step_s = total / steps;
  return out;
}

std::vector<std::vector<int>> gradient_buckets(const ComputeProfile& profile, int64_t cap_bytes) {
  TANDEM_CHECK(cap_bytes > 0, "simulate: the bucket cap must be > 0 bytes (got {})", cap_bytes);
  std::vector<std::vector<int>> buckets;
  int64_t filled = 0;
  for (int l = static_cast<int>(profile.layers.size()) - 1; l >= 0; --l) {
    const int64_t bytes = profile.layers[l].grad_bytes;
    if (bytes == 0) continue;
    if (buckets.empty() || filled + bytes > cap_bytes) {
      buckets.emplace_back();
      filled = 0;
    }
    buckets.back().push_back(l);
    filled += bytes;
  }
  return buckets;
}

}  // namespace tandem::sim::detail
