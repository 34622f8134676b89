// ps, easgd and gossip: the asynchronous strategies' virtual workers, an
// event queue in simulated time (lab/virtual_run.h).
#include <ATen/ops/empty_like.h>
#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "lab/virtual_run.h"
#include "tandem/core/check.h"

namespace tandem::lab::detail {

// ps and easgd: one server (rank `workers`) holds the parameters (ps) or
// the center variable (easgd).
VirtualResult run_server(Run& run, const VirtualOptions& o) {
  const VirtualProblem& p = run.problem();
  const bool elastic = o.strategy == VirtualStrategy::kEasgd;
  std::vector<Worker> ws;
  for (int k = 0; k < o.workers; ++k) ws.push_back(run.make_worker(elastic));
  run.set_buffers_source(ws[0].model.get());
  Worker server = run.make_worker(false);
  at::Tensor center = flat_of(server.params).clone();
  std::vector<at::Tensor> leaf = {center};
  std::unique_ptr<torch::optim::Optimizer> server_opt;
  if (!elastic) server_opt = p.make_optimizer(leaf);
  const double bytes = o.times ? o.times->param_bytes() : 0;
  const double apply_s = o.times ? o.times->server_step_s() : 0;
  const int server_rank = o.workers;

  std::vector<at::Tensor> pending(o.workers);  // what each worker sent
  std::vector<double> lr_sent(o.workers, 0);
  std::vector<int64_t> clock(o.workers, 0), pulled_min(o.workers, 0), pulled_version(o.workers, 0);
  std::vector<bool> active(o.workers, true), waiting(o.workers, false);
  int64_t version = 0;
  double server_free = 0;
  Events ev;
  auto min_clock = [&] {
    int64_t low = std::numeric_limits<int64_t>::max();
    for (int k = 0; k < o.workers; ++k) {
      if (active[k]) low = std::min(low, clock[k]);
    }
    return low == std::numeric_limits<int64_t>::max() ? 0 : low;
  };
  // A worker starts a local step at `t`; easgd exchanges every tau steps.
  auto start_step = [&](int k, double t) {
    if (ws[k].steps >= o.max_steps) {
      active[k] = false;
      return;
    }
    if (elastic) {
      run.local_step(ws[k], k, true);
      ev.push(t + run.compute_s(k, true), Kind::kStepDone, k);
    } else {
      lr_sent[k] = p.lr(ws[k].steps);
      run.local_step(ws[k], k, false);
      pending[k] = flat_gradients(ws[k].params);
      ev.push(t + run.compute_s(k, false), Kind::kStepDone, k);
    }
  };
  auto reply = [&](int k, double t) {
    waiting[k] = false;
    pulled_version[k] = version;
    pulled_min[k] = min_clock();
    if (!elastic) pending[k] = center.clone();  // the fresh parameters
    ev.push(t + run.message_s(bytes, server_rank, k), Kind::kReply, k);
  };
  auto release_waiting = [&](double t) {
    for (int k = 0; k < o.workers; ++k) {
      if (waiting[k] && clock[k] - min_clock() <= o.staleness) reply(k, t);
    }
  };
  for (int k = 0; k < o.workers; ++k) start_step(k, 0);
  const double end = run_events(ev, run, [&](const Event& e) {
    const double now = e.time;
    const int k = e.worker;
    if (e.kind == Kind::kStepDone) {
      if (elastic && ws[k].steps % o.tau != 0) {
        start_step(k, now);
      } else {
        if (elastic) pending[k] = flat_of(ws[k].params);
        ev.push(now + run.message_s(bytes, k, server_rank), Kind::kArrive, k);
      }
    } else if (e.kind == Kind::kArrive) {
      const double start = std::max(now, server_free);
      server_free = start + apply_s;
      if (elastic) {
        at::Tensor move = at::empty_like(center);
        parallel::elastic_move(pending[k], center, o.alpha, move);
        center.add_(move);
        ++run.result().staleness[version - pulled_version[k]];
        pending[k] = move;
      } else {
        ++run.result().staleness[clock[k] - pulled_min[k]];
        parallel::server_step(*server_opt, center, pending[k], lr_sent[k], p.set_lr);
      }
      ++version;
      ++clock[k];
      if (!elastic && o.staleness >= 0 && clock[k] - min_clock() > o.staleness) {
        waiting[k] = true;
      } else {
        reply(k, server_free);
      }
      if (!elastic && o.staleness >= 0) release_waiting(server_free);
    } else {  // kReply
      if (elastic) {
        at::Tensor x = flat_of(ws[k].params);
        copy_into(x.sub_(pending[k]), ws[k].params);
      } else {
        copy_into(pending[k], ws[k].params);
      }
      start_step(k, now);
      if (!active[k] && !elastic && o.staleness >= 0) release_waiting(now);
    }
    return run.maybe_evaluate(now, [&] { return center.clone(); });
  });
  return run.finish(end, center);
}

// gossip: after each local step, one exchange with a random open peer.
VirtualResult run_gossip(Run& run, const VirtualOptions& o) {
  TANDEM_CHECK(o.workers >= 2, "lab converge: gossip needs at least 2 workers (got {})", o.workers);
  std::vector<Worker> ws;
  std::vector<parallel::GossipPeers> peers;
  for (int k = 0; k < o.workers; ++k) {
    ws.push_back(run.make_worker(true));
    peers.emplace_back(o.seed, k);
  }
  run.set_buffers_source(ws[0].model.get());
  const double bytes = o.times ? o.times->param_bytes() : 0;
  struct Message {
    at::Tensor x;
    double weight;
    double arrive = 0;
  };
  std::vector<std::vector<Message>> inbox(o.workers), in_flight(o.workers);
  std::vector<bool> finished(o.workers, false);
  std::vector<int> asked(o.workers, -1);
  Events ev;
  auto closed_for = [&](int k) {
    std::vector<bool> closed = finished;
    closed[k] = true;
    return closed;
  };
  auto send = [&](int from, int to, double now) {  // the time it arrives
    const double arrive = now + run.message_s(bytes, from, to);
    in_flight[to].push_back({flat_of(ws[from].params), ws[from].weight, arrive});
    ev.push(arrive, Kind::kArrive, to);
    return arrive;
  };
  auto merge = [&](int k, const Message& m) {
    ws[k].weight = parallel::push_sum_merge(ws[k].params, ws[k].weight, m.x, m.weight);
  };
  auto consensus = [&] {
    at::Tensor sum;
    double total = 0;
    auto add = [&](const at::Tensor& x, double w) {
      sum = sum.defined() ? sum.add(x, w) : x.mul(w);
      total += w;
    };
    for (int k = 0; k < o.workers; ++k) {
      add(flat_of(ws[k].params), ws[k].weight);
      for (const auto& m : inbox[k]) add(m.x, m.weight);
      for (const auto& m : in_flight[k]) add(m.x, m.weight);
    }
    return sum.div_(total);
  };
  auto start_step = [&](int k, double t) {
    if (ws[k].steps >= o.max_steps) {
      finished[k] = true;
      for (const auto& m : inbox[k]) merge(k, m);
      inbox[k].clear();
      return;
    }
    run.local_step(ws[k], k, true);
    ev.push(t + run.compute_s(k, true), Kind::kStepDone, k);
  };
  for (int k = 0; k < o.workers; ++k) start_step(k, 0);
  const double end = run_events(ev, run, [&](const Event& e) {
    const double now = e.time;
    const int k = e.worker;
    if (e.kind == Kind::kStepDone) {
      const int peer = peers[k].pick(closed_for(k));
      if (peer < 0) {
        ev.push(now, Kind::kMix, k);
      } else if (!o.gossip_pull) {
        ws[k].weight /= 2;
        ev.push(send(k, peer, now), Kind::kMix, k);
      } else {
        asked[k] = peer;
        ev.push(now + run.message_s(16, k, peer), Kind::kReply, k);  // the request reaches the peer
      }
    } else if (e.kind == Kind::kArrive) {
      auto& f = in_flight[k];
      for (auto it = f.begin(); it != f.end();) {
        if (it->arrive <= now) {
          inbox[k].push_back(std::move(*it));
          it = f.erase(it);
        } else {
          ++it;
        }
      }
      if (finished[k]) {
        for (const auto& m : inbox[k]) merge(k, m);
        inbox[k].clear();
      }
    } else if (e.kind == Kind::kReply) {  // pull: the peer answers at once
      const int peer = asked[k];
      ws[peer].weight /= 2;
      ev.push(send(peer, k, now), Kind::kMix, k);
    } else {  // kMix: merge what arrived, go on
      for (const auto& m : inbox[k]) merge(k, m);
      inbox[k].clear();
      start_step(k, now);
    }
    return run.maybe_evaluate(now, consensus);
  });
  return run.finish(end, consensus());
}

}  // namespace tandem::lab::detail
