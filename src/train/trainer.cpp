// train(): one loop for every strategy and the mesh. The run is built (data,
// model, roles, strategy), resumed, stepped through Strategy::train_step,
// logged, checkpointed and summarised, each by one function below.
#include "tandem/train/trainer.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <tuple>

#include "tandem/core/check.h"
#include "tandem/core/log.h"
#include "tandem/launch/elastic_protocol.h"
#include "tandem/parallel/async/parameter_server.h"
#include "tandem/train/lr_schedule.h"
#include "tandem/train/mesh_model.h"
#include "tandem/train/models/models.h"
#include "tandem/train/straggler.h"
#include "tandem/train/strategy.h"
#include "train/async_strategies.h"
#include "train/elastic_run.h"
#include "train/resume.h"
#include "train/trainer_support.h"

namespace tandem::train {
namespace {

using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

// One rank's run: what it trains, on which ranks, and how.
struct Run {
  Run(const TrainerOptions& options, std::shared_ptr<Communicator> world, std::ostream* lead_out)
      : o(options),
        comm(std::move(world)),
        workers(comm),
        data(comm),
        lead(lead_out),
        out(comm->rank() == 0 ? lead_out : nullptr) {}

  const TrainerOptions& o;
  std::shared_ptr<Communicator> comm;     // every rank
  std::shared_ptr<Communicator> workers;  // the training ranks (all but the servers)
  std::shared_ptr<Communicator> data;     // the ranks the sampler shards over
  std::ostream* lead;                     // where rank 0's progress goes
  std::ostream* out;                      // `lead` on rank 0; null elsewhere
  ElasticRun* elastic = nullptr;          // an elastic run's membership and commits
  ModelInput spec;
  Datasets sets;
  torch::nn::AnyModule model;  // the whole model; empty under --mesh
  std::shared_ptr<TraceRecorder> trace;
  std::unique_ptr<Strategy> strategy;
  MeshModel* mesh = nullptr;  // the strategy, under --mesh
  std::unique_ptr<Straggler> straggler;
  StepContext context;
  BatchCursor* cursor = nullptr;
  int64_t total = 0;  // the schedule's steps
  int64_t stop = 0;   // where this call stops
  double base_lr = 0;
};

// The last metrics line of the strategies of docs/strategies.md (servers too).
nlohmann::json summary_metrics(const TrainerOptions& o, int rank, const TrainSummary& s) {
  nlohmann::json line = {
      {"summary", true},          {"rank", rank},
      {"server", s.server},       {"strategy", std::string(name_of(o.strategy.kind))},
      {"steps", s.steps},         {"mean_step_s", s.mean_step_seconds},
      {"wait_s", s.wait_seconds}, {"dropped_gradients", s.dropped_gradients}};
  nlohmann::json histogram = nlohmann::json::object();
  for (const auto& [k, n] : s.staleness_histogram) histogram[std::to_string(k)] = n;
  line["staleness_histogram"] = histogram;
  if (s.consensus_distance >= 0) line["consensus_distance"] = s.consensus_distance;
  return line;
}

// The roles: under ps, easgd and backup workers the last --servers ranks
// serve and the others train, and the loop's collectives (log, eval) run
// among the latter. Returns true on a server. Collective (the split).
bool assign_roles(Run& r) {
  if (servers_for(r.o) == 0) return false;
  const int servers = r.o.strategy.async.servers;
  const bool serving = parallel::PsRoles::of(r.comm->size(), servers).is_server(r.comm->rank());
  r.workers = r.data = r.comm->split(serving ? 1 : 0);
  return serving;
}

// The whole model on every rank, and the roles (assign_roles).
bool build_model(Run& r) {
  at::manual_seed(r.o.run.seed);
  r.model = make_model(r.o.model.kind);
  if (r.o.model.dtype == Dtype::kFloat64) r.model.ptr()->to(at::kDouble);
  return assign_roles(r);
}

// An elastic run whose ranks step together (ddp, zero): commits, votes,
// the global batch. The asynchronous strategies re-form without them.
bool lockstep_elastic(const Run& r) { return r.elastic && !is_asynchronous(r.o); }

// The metrics file's {rank}: the worker id in an elastic run.
int metrics_rank(const Run& r) {
  return r.elastic ? r.elastic->membership().worker_id() : r.comm->rank();
}

TrainSummary serve(Run& r, parallel::ParameterServerState* carry = nullptr) {
  TrainSummary s = serve_parameters(r.o, r.model.ptr(), r.comm, carry);
  MetricsFile(r.o.observe.metrics_file, metrics_rank(r))
      .write(summary_metrics(r.o, r.comm->rank(), s));
  return s;
}

// Logs a membership change (rank 0 of the new generation says it), in the
// metrics and the trace.
void log_change(const Run& r, const MembershipChange& change, MetricsFile& metrics,
                Clock::time_point since) {
  if (r.out) *r.out << change.describe();
  metrics.write(change.to_json());
  if (r.trace) r.trace->span("membership change", "elastic", since, Clock::now());
}

// The strategy (a MeshModel under --mesh) and what each step is handed.
// Collective over the training ranks.
void build_strategy(Run& r) {
  if (!r.trace) r.trace = open_trace(r.o, r.comm->rank());
  if (r.o.mesh.shape) {
    auto mesh = std::make_unique<MeshModel>(r.o, r.comm, r.trace);
    r.mesh = mesh.get();
    r.data = mesh->data();
    r.strategy = std::move(mesh);
  } else {
    r.strategy = make_strategy(r.o, r.model.ptr(), r.comm, r.trace, r.workers);
    r.context.forward = [&model = r.model](const at::Tensor& x) { return model.forward(x); };
  }
  r.straggler = std::make_unique<Straggler>(r.o.straggler.delay, r.o.straggler.slowdown,
                                            r.comm->rank(), r.o.run.seed);
  r.context.clip_grad_norm = r.o.optimizer.clip_grad_norm;
  r.context.straggler = r.straggler.get();
  r.context.trace = r.trace.get();
}

// The learning rate before the schedule: --lr, times the data ranks under
// --scale-lr (an elastic run's first generation's, times its factor).
void set_base_lr(Run& r) {
  const TrainerOptions& o = r.o;
  const int ranks = lockstep_elastic(r) ? r.elastic->first_world() : r.data->size();
  r.base_lr = (o.optimizer.scale_lr ? o.optimizer.lr * ranks : o.optimizer.lr);
  if (lockstep_elastic(r)) r.base_lr *= r.elastic->lr_factor();
}

// The schedule's length, this call's end and the base learning rate; the
// checks that need the run's length.
void plan_steps(Run& r, int64_t shard_size) {
  const TrainerOptions& o = r.o;
  r.total = total_steps(o, shard_size);
  r.stop = o.run.stop_at_step > 0 ? std::min(o.run.stop_at_step, r.total) : r.total;
  set_base_lr(r);
  const DdpConfig& ddp = o.strategy.ddp;
  TANDEM_CHECK(ddp.compression != GradCompression::kPowerSgd || ddp.powersgd_start_iter < r.total,
               "--powersgd-start-iter {} is not below the run's {} steps, so PowerSGD would "
               "never start; lower it (0 compresses from the first step)",
               ddp.powersgd_start_iter, r.total);
}

// Rank 0's first line: what trains on what, how, for how long.
std::string header_line(const Run& r) {
  const TrainerOptions& o = r.o;
  const std::string model(name_of(o.model.kind));
  const std::string optimizer(name_of(o.optimizer.kind));
  const std::string strategy(name_of(o.strategy.kind));
  const std::string data = r.sets.train->describe();
  if (r.mesh) {
    return fmt::format(
        "tandem train: {} on {}, {} ranks on {}, mesh {}, strategy {} over dp, batch {} per data "
        "rank, {} lr {}, {} steps\n",
        model, data, r.comm->size(), r.comm->backend(), r.mesh->describe(), strategy,
        o.run.batch_size, optimizer, r.base_lr, r.total);
  }
  std::string compression;
  const DdpConfig& ddp = o.strategy.ddp;
  if (ddp.compression == GradCompression::kPowerSgd) {
    compression =
        fmt::format(" (powersgd rank {} from step {})", ddp.powersgd_rank, ddp.powersgd_start_iter);
  } else if (ddp.compression != GradCompression::kNone) {
    compression = fmt::format(" ({} gradients)", name_of(ddp.compression));
  }
  return fmt::format(
      "tandem train: {} on {}, {} rank(s) on {}, strategy {}{}{}, batch {} per rank, {} lr {}, {} "
      "steps\n",
      model, data, r.comm->size(), r.comm->backend(), strategy, compression,
      strategy_details(o, r.comm->size()), o.run.batch_size, optimizer, r.base_lr, r.total);
}

// The batch at the cursor, as the model takes it.
Batch next_batch(const Run& r, BatchCursor& cursor) {
  Example ex = r.sets.train->batch(cursor.next());
  return Batch{model_input(ex.input, r.spec, r.o), ex.target};
}

// Collective over the data ranks: loss and accuracy on up to
// --eval-batches batches of the evaluation set.
std::pair<double, double> evaluate(const Run& r) {
  const Dataset& set = r.sets.eval();
  const int64_t batch = r.o.run.batch_size;
  SamplerOptions so{set.size(), r.data->size(), r.data->rank(), false, r.o.run.seed, true, 0, 0};
  const std::vector<int64_t> idx = DistributedSampler(so).indices();
  EvalSums sums;
  for (int64_t start = 0, b = 0;
       start + batch <= static_cast<int64_t>(idx.size()) && b < r.o.observe.eval_batches;
       start += batch, ++b) {
    Example ex = set.batch(std::span<const int64_t>(idx.data() + start, batch));
    sums += r.strategy->evaluate(Batch{model_input(ex.input, r.spec, r.o), ex.target}, r.context);
  }
  r.strategy->end_forward_only();
  const auto all = average_over_ranks(*r.data, {sums.loss, sums.correct, sums.count});
  return {all[2] > 0 ? all[0] / all[2] : 0.0, all[2] > 0 ? all[1] / all[2] : 0.0};
}

// The losses since the last log line.
struct LogWindow {
  double sum = 0;
  int64_t steps = 0;
  bool first = true;
};

// A log step: the window's mean (over the ranks when they meet every step),
// the progress line and this rank's metrics line. Collective for
// synchronous strategies.
void log_step(const Run& r, LogWindow& w, const BatchCursor& cursor, int64_t step,
              int64_t first_step, Clock::time_point start, Progress& progress, MetricsFile& metrics,
              TrainSummary& s) {
  const bool synchronous = r.strategy->synchronous();
  const double local = w.sum / static_cast<double>(w.steps);
  // Asynchronous strategies log this rank's own loss: a collective here
  // would make every worker wait for the slowest.
  const bool reduce = synchronous && !r.strategy->reports_global_loss();
  const double mean = reduce ? average_over_ranks(*r.data, {local})[0] : local;
  if (w.first) s.first_loss = mean;
  w = LogWindow{.first = false};
  s.final_loss = mean;
  const double elapsed = Seconds(Clock::now() - start).count();
  const int64_t done = step + 1 - first_step;
  const double sps = static_cast<double>(done * r.o.run.batch_size * r.data->size()) / elapsed;
  progress.update(step + 1, cursor.epoch(), mean, sps,
                  elapsed / static_cast<double>(done) * static_cast<double>(r.stop - step - 1));
  if (!metrics.is_open()) return;
  nlohmann::json line = {{"step", step + 1},
                         {"epoch", cursor.epoch()},
                         {"rank", r.comm->rank()},
                         {"loss", local},
                         {"loss_all_ranks", mean},
                         {"samples_per_s", sps},
                         {"elapsed_s", elapsed},
                         {"strategy", std::string(name_of(r.o.strategy.kind))},
                         {"unix_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count()}};
  if (!synchronous) line["loss_all_ranks"] = nullptr;  // not measured: no collective
  if (r.mesh) {
    line["mesh"] = r.o.mesh.shape->describe();
    line["bubble"] = r.mesh->bubble();
    line["max_in_flight"] = r.mesh->max_in_flight();
  } else {
    line["all_reduce_bytes"] = r.strategy->gradient_bytes();
    line["wait_s"] = r.strategy->stats().wait_seconds;
  }
  metrics.write(line);
}

// After the last step: the summary's measurements, the strategies' metrics
// line, the final evaluation and rank 0's closing lines. Collective.
void summarize(const Run& r, int64_t steps_done, double train_seconds, Clock::time_point start,
               MetricsFile& metrics, TrainSummary& s) {
  s.state_digest = r.strategy->state_digest();
  s.steps = steps_done;
  // Workers of asynchronous strategies may run different numbers of steps.
  const double mean_steps = average_over_ranks(*r.data, {static_cast<double>(steps_done)})[0];
  s.samples = static_cast<int64_t>(mean_steps * r.data->size() + 0.5) * r.o.run.batch_size;
  s.wall_seconds = Seconds(Clock::now() - start).count();
  s.samples_per_second = static_cast<double>(s.samples) / s.wall_seconds;
  s.workers = r.workers->size();
  s.mean_step_seconds = steps_done > 0 ? train_seconds / static_cast<double>(steps_done) : 0.0;
  const Strategy::Stats stats = r.strategy->stats();
  s.wait_seconds = stats.wait_seconds;
  s.staleness_histogram = stats.staleness;
  s.dropped_gradients = stats.dropped_gradients;
  s.consensus_distance = stats.consensus_distance;
  // The strategies of docs/strategies.md end their metrics with what they measured.
  const bool async_summary = servers_for(r.o) > 0 || !r.strategy->synchronous();
  if (async_summary) metrics.write(summary_metrics(r.o, r.comm->rank(), s));
  std::tie(s.eval_loss, s.eval_accuracy) = evaluate(r);
  record_memory(s, r.strategy->memory());
  if (!r.out) return;
  const std::string what = r.mesh ? "its part of " + r.o.mesh.shape->describe()
                                  : std::string(name_of(r.o.strategy.kind));
  *r.out << memory_line(s, what);
  if (r.mesh && r.mesh->max_in_flight() > 0) {
    *r.out << fmt::format(
        "pipeline: at most {} micro-batches in flight on stage 0; bubble {:.3f} in the last "
        "step\n",
        r.mesh->max_in_flight(), r.mesh->bubble());
  }
  if (async_summary) *r.out << strategy_summary(r.o, s);
  *r.out << summary_line(s);
}

// The learning rate of `step`.
double lr_at(const Run& r, int64_t step) {
  const OptimizerConfig& p = r.o.optimizer;
  return learning_rate(p.schedule, r.base_lr, step, p.warmup_steps, r.total);
}

// After step `step`: the checkpoint, the log line and the evaluation that
// fall on it. Collective.
void after_step(Run& r, int64_t step, bool last, LogWindow& window, int64_t first_step,
                Clock::time_point start, Progress& progress, MetricsFile& metrics,
                TrainSummary& s) {
  const TrainerOptions& o = r.o;
  const int64_t every = o.checkpoint.every;
  if (!last && every > 0 && (step + 1) % every == 0) {
    save_checkpoint(o, *r.strategy, *r.comm,
                    RunPosition{step + 1, r.cursor->epoch(), r.cursor->samples_in_epoch()});
  }
  if (((step + 1) % o.observe.log_every == 0 || last) && window.steps > 0) {
    log_step(r, window, *r.cursor, step, first_step, start, progress, metrics, s);
  }
  if (o.observe.eval_every > 0 && (step + 1) % o.observe.eval_every == 0 && !last) {
    const auto [loss, accuracy] = evaluate(r);
    if (r.out) {
      *r.out << fmt::format("eval at step {}: loss {:.4f}, accuracy {:.3f}\n", step + 1, loss,
                            accuracy);
    }
  }
}

// Elastic, asynchronous: leaves the failed generation, joins the next and
// rebuilds this rank's part on its communicator from its current state (a
// server keeps its shard and optimizer state in `carry`). The rank goes on
// at `step`. Collective over the new generation.
void reform_async(Run& r, int64_t step, bool mid_step, MetricsFile& metrics,
                  parallel::ParameterServerState* carry) {
  const auto since = Clock::now();
  r.strategy.reset();  // every user of the old communicator goes first
  MembershipChange change = r.elastic->reform_async(servers_for(r.o), since, step, mid_step);
  r.comm = r.workers = r.data = r.elastic->comm();
  r.out = r.comm->rank() == 0 ? r.lead : nullptr;
  const bool serving = assign_roles(r);
  TANDEM_CHECK(serving == (carry != nullptr),
               "elastic generation {}: rank {} changed between worker and server",
               r.elastic->generation().number, r.comm->rank());
  const auto rebuild = Clock::now();
  if (!serving) build_strategy(r);
  const double rebuilt = Seconds(Clock::now() - rebuild).count();
  change.state_seconds += rebuilt;
  change.recovery_seconds += rebuilt;
  log_change(r, change, metrics, since);
}

// A server of an elastic asynchronous run: serves each generation until
// the workers are done, carrying its state across the changes.
TrainSummary serve_elastic(Run& r) {
  parallel::ParameterServerState carry;
  MetricsFile metrics(r.o.observe.metrics_file, metrics_rank(r));
  while (true) {
    try {
      return serve(r, &carry);
    } catch (const std::exception& e) {
      if (!r.elastic->failed()) throw;
      log::info("elastic: serving failed: {}", e.what());
      reform_async(r, 0, false, metrics, &carry);
    }
  }
}

// Elastic: the new generation's model and strategy, restored from `rec`,
// and the cursor where the run continues; logged by the new rank 0, in the
// metrics and the trace. Collective over the new generation.
void rejoin(Run& r, ElasticRun::Recovered rec, GlobalCursor& cursor, MetricsFile& metrics,
            Clock::time_point since) {
  r.comm = r.workers = r.data = r.elastic->comm();
  r.out = r.comm->rank() == 0 ? r.lead : nullptr;
  const auto rebuild = Clock::now();
  build_model(r);
  build_strategy(r);
  restore(rec.point, *r.strategy);
  const double rebuilt = Seconds(Clock::now() - rebuild).count();
  rec.change.state_seconds += rebuilt;
  rec.change.recovery_seconds += rebuilt;
  cursor.resume_at(rec.point.base.epoch, rec.point.base.samples_in_epoch);
  r.elastic->split(cursor);
  set_base_lr(r);
  r.context.loss_scale = cursor.loss_scale();
  log_change(r, rec.change, metrics, since);
  if (r.out && r.o.elastic.batch == ElasticBatch::kPerRank) {
    *r.out << fmt::format(
        "elastic: --elastic-batch per-rank: {} samples per step now, learning rate scaled to {}\n",
        r.elastic->global_batch(), r.base_lr);
  }
}

// Elastic: leaves the failed (or ending) generation at `step` and rejoins;
// returns the step the run continues from.
// A generation that fails while it forms or gathers the state (another
// member died meanwhile) is left too, and the next one tried.
int64_t recover(Run& r, int64_t step, bool mid_step, GlobalCursor& cursor, MetricsFile& metrics) {
  const auto since = Clock::now();
  while (true) {
    r.strategy.reset();  // every user of the old communicator goes first
    r.model = {};
    const int64_t left = r.elastic->generation().number;
    try {
      ElasticRun::Recovered rec = r.elastic->recover(step, since, mid_step);
      const int64_t next = rec.point.base.step;
      rejoin(r, std::move(rec), cursor, metrics, since);
      return next;
    } catch (const std::exception& e) {
      // No new generation (evicted, aborted, timed out): the error stands.
      if (r.elastic->generation().number == left || !r.elastic->failed()) throw;
      log::info("elastic: generation {} failed while it formed: {}",
                r.elastic->generation().number, e.what());
    }
  }
}

// The loop from `first_step` to r.stop (or until the servers end the run),
// then the summary. Collective. In an elastic run a step that fails because
// a member left is redone in the next generation.
TrainSummary run_loop(Run& r, int64_t first_step) {
  const TrainerOptions& o = r.o;
  auto* global = dynamic_cast<GlobalCursor*>(r.cursor);
  MetricsFile metrics(o.observe.metrics_file, metrics_rank(r));
  Progress progress(r.out, r.total);
  TrainSummary s;
  LogWindow window;
  int64_t steps_done = 0;
  const auto start = Clock::now();
  if (r.elastic && r.elastic->joined_late()) {
    // A replacement: the survivors' state, then the loop at their step.
    const auto since = Clock::now();
    try {
      ElasticRun::Recovered rec = r.elastic->catch_up();
      first_step = rec.point.base.step;
      rejoin(r, std::move(rec), *global, metrics, since);
    } catch (const std::exception& e) {
      if (!r.elastic->failed()) throw;
      log::info("elastic: generation {} failed while it formed: {}",
                r.elastic->generation().number, e.what());
      first_step = recover(r, 0, false, *global, metrics);
    }
  }
  for (int64_t step = first_step; step < r.stop && !r.strategy->finished();) {
    bool mid_step = false;
    try {
      const RunPosition here{step, r.cursor->epoch(), r.cursor->samples_in_epoch()};
      if (lockstep_elastic(r) && r.elastic->at_boundary(*r.strategy, here)) {
        step = recover(r, step, false, *global, metrics);
        progress = Progress(r.out, r.total);
        continue;
      }
      mid_step = true;
      const Batch batch = next_batch(r, *r.cursor);
      window.sum += r.strategy->train_step(batch, lr_at(r, step), r.context);
      ++window.steps;
      const bool last = step + 1 == r.stop || r.strategy->finished();
      after_step(r, step, last, window, first_step, start, progress, metrics, s);
      ++steps_done;
      ++step;
    } catch (const std::exception& e) {
      if (!r.elastic || !r.elastic->failed()) throw;
      log::info("elastic: step {} failed: {}", step, e.what());
      if (lockstep_elastic(r)) {
        step = recover(r, step, mid_step, *global, metrics);
      } else {
        reform_async(r, step, mid_step, metrics, nullptr);
      }
      window = LogWindow{.first = window.first};
      progress = Progress(r.out, r.total);
    }
  }
  progress.done();
  const double train_seconds = Seconds(Clock::now() - start).count();
  while (true) {
    try {
      r.strategy->finish();
      break;
    } catch (const std::exception& e) {
      // Asynchronous workers say goodbye to their peers here: a failure
      // then is survived as one inside the loop.
      if (!r.elastic || lockstep_elastic(r) || !r.elastic->failed()) throw;
      log::info("elastic: finishing failed: {}", e.what());
      reform_async(r, r.stop, false, metrics, nullptr);
    }
  }
  if (r.trace) write_trace(*r.trace, o, r.comm->rank(), r.out);
  const RunPosition end{r.stop, r.cursor->epoch(), r.cursor->samples_in_epoch()};
  if (r.stop > first_step) save_checkpoint(o, *r.strategy, *r.comm, end);
  summarize(r, steps_done, train_seconds, start, metrics, s);
  return s;
}

}  // namespace

namespace {

// Elastic runs cover the synchronous data-parallel strategies, and ps and
// gossip (which lose workers, but take none that join).
void check_elastic(const TrainerOptions& o, const ElasticRun& elastic) {
  const StrategyKind k = o.strategy.kind;
  const bool lockstep =
      (k == StrategyKind::kNone || k == StrategyKind::kDdp || k == StrategyKind::kZero1 ||
       k == StrategyKind::kZero2 || k == StrategyKind::kZero3) &&
      servers_for(o) == 0;
  const bool async = k == StrategyKind::kPs || k == StrategyKind::kGossip;
  if (!(lockstep || async) || o.mesh.shape) {
    throw NotSupported(fmt::format(
        "elastic training (tandem-run --min-workers/--max-workers) covers --strategy none, ddp, "
        "zero1, zero2, zero3, ps and gossip without --mesh; --strategy {}{}{} is not covered yet",
        name_of(k), servers_for(o) > 0 && !async ? " with parameter servers" : "",
        o.mesh.shape ? " with --mesh" : ""));
  }
  TANDEM_CHECK(o.run.stop_at_step == 0, "elastic training does not take stop_at_step");
  if (async && elastic.joined_late()) {
    throw NotSupported(fmt::format(
        "elastic --strategy {}: a worker cannot join a running asynchronous job (its workers "
        "and servers keep their own state); the job goes on without this one",
        name_of(k)));
  }
}

// Resumes from --resume's checkpoint, if any: the cursor and the first step.
int64_t resume_from(Run& r, std::optional<ResumePoint>& resumed) {
  const TrainerOptions& o = r.o;
  if (!resumed) {
    if (o.checkpoint.resume != ResumeMode::kOff && r.out) {
      *r.out << fmt::format("no checkpoint in '{}' yet; starting from step 0\n", o.checkpoint.dir);
    }
    return 0;
  }
  const Checkpoint& at = resumed->base;
  if (auto* epochs = dynamic_cast<EpochCursor*>(r.cursor)) {
    epochs->resume_at(at.epoch, at.samples_in_epoch, at.path);
  } else {
    dynamic_cast<GlobalCursor&>(*r.cursor).resume_at(at.epoch, at.samples_in_epoch);
  }
  if (r.out) {
    *r.out << fmt::format("resuming from '{}' at step {} (epoch {}, {} samples in)\n", at.path,
                          at.step, at.epoch, at.samples_in_epoch);
  }
  const int64_t step = at.step;
  resumed.reset();
  return step;
}

TrainSummary train_run(const TrainerOptions& o, const std::shared_ptr<Communicator>& comm,
                       std::ostream* out, ElasticRun* elastic) {
  TANDEM_CHECK(comm != nullptr, "train: the communicator is null");
  validate_options(o, comm->size());
  if (elastic) check_elastic(o, *elastic);
  Run r(o, comm, out);
  r.elastic = elastic;
  r.spec = input_spec(o.model.kind);
  r.sets = make_datasets(o, r.spec);
  const bool late = elastic && elastic->joined_late();
  if (elastic && is_asynchronous(o) && elastic->generation().number == 0 &&
      elastic->generation().rank == 0) {
    elastic->close_joins(
        fmt::format("--strategy {} is asynchronous: a running job takes no new workers",
                    name_of(o.strategy.kind)));
  }
  // A late joiner builds its strategy with the survivors, after catching up.
  if (!late) {
    if (!o.mesh.shape && build_model(r)) return r.elastic ? serve_elastic(r) : serve(r);
  }
  // Every rank reads the checkpoint and checks it before any collective.
  std::optional<ResumePoint> resumed;
  if (!late) resumed = find_resume_point(o, comm->rank(), comm->size());
  if (!late) build_strategy(r);
  const auto activations = track_activations(o);
  if (resumed) restore(*resumed, *r.strategy);

  std::unique_ptr<BatchCursor> cursor;
  if (lockstep_elastic(r)) {
    auto global = std::make_unique<GlobalCursor>(r.sets.train->size(), o.run.seed);
    elastic->split(*global);
    r.context.loss_scale = global->loss_scale();
    // A survivor's larger share of the global batch runs in passes of
    // --batch-size rows: no more activation memory than before the change.
    r.context.micro_batch = o.run.batch_size;
    const int64_t per_epoch = global->steps_per_epoch(elastic->global_batch());
    r.cursor = global.get();
    cursor = std::move(global);
    plan_steps(r, per_epoch * o.run.batch_size);
  } else {
    const SamplerOptions so{
        r.sets.train->size(), r.data->size(), r.data->rank(), true, o.run.seed, false, 0, 0};
    auto epochs = std::make_unique<EpochCursor>(so, o.run.batch_size);
    plan_steps(r, epochs->shard_size());
    r.cursor = epochs.get();
    cursor = std::move(epochs);
  }
  if (r.out) *r.out << header_line(r);
  return run_loop(r, resume_from(r, resumed));
}

}  // namespace

TrainSummary train(const TrainerOptions& o, const std::shared_ptr<Communicator>& comm,
                   std::ostream* out) {
  return train_run(o, comm, out, nullptr);
}

TrainSummary train_elastic(const TrainerOptions& options, const InitOptions& init,
                           std::ostream* out) {
  TrainerOptions o = options;
  o.elastic.enabled = true;
  const RendezvousInfo info = read_rendezvous_env();
  const launch::elastic::ElasticEnv env = launch::elastic::read_elastic_env();
  ElasticRun elastic(o, std::make_unique<ElasticMembership>(info, env, init));
  TrainSummary s = train_run(o, elastic.comm(), out, &elastic);
  if (elastic.generation().rank == 0) elastic.membership().complete();
  return s;
}

}  // namespace tandem::train
