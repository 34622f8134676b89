#include "lab/plan.h"

#include <fmt/format.h>

#include <algorithm>

#include "lab/strategy_from_options.h"
#include "tandem/core/check.h"
#include "tandem/core/error.h"

namespace tandem::lab {
namespace {

struct Candidate {
  std::string strategy, layout;
  bool synchronous;
  train::TrainerOptions options;
};

std::vector<Candidate> candidates(const train::TrainerOptions& base, int n) {
  std::vector<Candidate> out;
  const std::string dp = fmt::format("dp={}", n);
  for (const char* s : {"ddp", "zero1", "zero2", "zero3"}) {
    out.push_back({s, dp, true, with_strategy(base, s)});
  }
  for (int pp = 2; pp <= n; pp *= 2) {
    if (n % pp != 0) continue;
    for (int m : {pp, 2 * pp, 4 * pp}) {
      train::TrainerOptions o = with_strategy(base, "pipeline");
      o.mesh.shape = train::MeshShape{.dp = n / pp, .pp = pp, .tp = 1};
      o.mesh.micro_batches = m;
      out.push_back({"pipeline", fmt::format("dp={},pp={} m={}", n / pp, pp, m), true, o});
    }
  }
  if (n >= 2) {
    train::TrainerOptions ps = with_strategy(base, "ps");
    ps.strategy.async.servers = std::max(1, n / 16);
    out.push_back({"ps",
                   fmt::format("{} workers + {} server(s)", n - ps.strategy.async.servers,
                               ps.strategy.async.servers),
                   false, ps});
    out.push_back({"gossip", dp, false, with_strategy(base, "gossip")});
    train::TrainerOptions local = with_strategy(base, "local-sgd");
    out.push_back({"local-sgd",
                   fmt::format("{}, average every {}", dp, local.strategy.async.sync_every), false,
                   local});
  }
  return out;
}

std::string percent(double a, double b) { return fmt::format("{:.0f}%", (a / b - 1) * 100); }

std::string explain(const std::vector<PlanRow>& rows, const PlanOptions& o) {
  const PlanRow* best = nullptr;
  for (const PlanRow& r : rows) {
    if (r.fits && r.synchronous) {
      best = &r;
      break;
    }
  }
  if (!best) {
    return o.device_memory > 0
               ? fmt::format(
                     "No synchronous configuration fits {} per device; more devices, "
                     "or a smaller batch, would.",
                     human_bytes(o.device_memory))
               : std::string("No synchronous configuration can run on these workers.");
  }
  std::string why = fmt::format("{} at {}: {:.0f} samples/s predicted", best->strategy,
                                best->layout, best->result.samples_per_s);
  if (best->result.goodput_keep_survivors < 1) {
    why +=
        fmt::format(" ({:.1f}% of the time training, checkpoints every {:.0f} s)",
                    best->result.goodput_keep_survivors * 100, best->result.checkpoint_interval_s);
  }
  why += ".";
  for (const PlanRow& r : rows) {
    if (&r == best || !r.synchronous || !r.fits) continue;
    why += fmt::format(
        " The next, {} at {}, is {} slower: a step of {:.2f} ms against {:.2f} ms, {:.2f} ms "
        "of it exposed communication against {:.2f} ms.",
        r.strategy, r.layout, percent(best->effective_samples_per_s, r.effective_samples_per_s),
        r.result.step_s * 1e3, best->result.step_s * 1e3, r.result.exposed_comm_s * 1e3,
        best->result.exposed_comm_s * 1e3);
    break;
  }
  for (const PlanRow& r : rows) {
    if (!r.synchronous || r.fits || r.effective_samples_per_s <= best->effective_samples_per_s) {
      continue;
    }
    why += fmt::format(" {} at {} would be {} faster but needs {} per device, more than {}.",
                       r.strategy, r.layout,
                       percent(r.effective_samples_per_s, best->effective_samples_per_s),
                       human_bytes(r.result.memory_bytes), human_bytes(o.device_memory));
    break;
  }
  for (const PlanRow& r : rows) {
    if (!r.synchronous && r.fits &&
        r.effective_samples_per_s > best->effective_samples_per_s * 1.05) {
      why += fmt::format(
          " {} ({}) would take {} more samples per second, but its steps are "
          "not synchronous ones: check the steps it needs with `tandem lab "
          "converge` first.",
          r.strategy, r.layout, percent(r.effective_samples_per_s, best->effective_samples_per_s));
      break;
    }
  }
  return why;
}

}  // namespace

Plan make_plan(const SimulationInputs& in, const train::TrainerOptions& base,
               const PlanOptions& o) {
  TANDEM_CHECK(o.workers >= 1, "plan: --workers must be at least 1 (got {})", o.workers);
  TANDEM_CHECK(o.device_memory >= 0, "plan: --device-memory must be >= 0 (got {})",
               o.device_memory);
  TANDEM_CHECK(o.mttf_hours >= 0, "plan: --mttf must be >= 0 hours (got {})", o.mttf_hours);
  TANDEM_CHECK(o.top >= 1, "plan: --top must be at least 1 (got {})", o.top);
  sim::ClusterSpec cluster = in.cluster;
  if (o.mttf_hours > 0) cluster.failures.mttf_node_s = o.mttf_hours * 3600;
  Plan plan;
  for (const Candidate& c : candidates(base, o.workers)) {
    sim::StrategySpec spec;
    try {
      spec = strategy_from_options(c.options, in.compute);
    } catch (const InvalidArgument&) {
      continue;  // the profile cannot be cut into these stages
    } catch (const NotSupported&) {
      continue;  // not modelled
    }
    if (!unfit_world_size(spec, o.workers).empty()) continue;
    PlanRow row{.strategy = c.strategy,
                .layout = c.layout,
                .synchronous = c.synchronous,
                .fits = true,
                .result = sim::simulate(in.compute, in.links, cluster, spec, o.workers),
                .effective_samples_per_s = 0};
    row.fits = o.device_memory == 0 || row.result.memory_bytes <= o.device_memory;
    const double goodput =
        cluster.failures.mttf_node_s > 0 ? row.result.goodput_keep_survivors : 1.0;
    row.effective_samples_per_s = row.result.samples_per_s * goodput;
    plan.rows.push_back(std::move(row));
  }
  std::stable_sort(plan.rows.begin(), plan.rows.end(), [](const PlanRow& a, const PlanRow& b) {
    if (a.fits != b.fits) return a.fits;
    return a.effective_samples_per_s > b.effective_samples_per_s;
  });
  plan.recommendation = explain(plan.rows, o);
  return plan;
}

}  // namespace tandem::lab
