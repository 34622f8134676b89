// The spellings' errors (choices.h), the texts parsed into typed options
// (--mesh, --wrap-policy) and validate_options(), the one check of a whole
// TrainerOptions.
#include "tandem/train/options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"
#include "tandem/train/models/sequential.h"

namespace tandem::train {

namespace detail {

void throw_unknown_choice(std::string_view flag, std::string_view text, const std::string& names,
                          const std::string& hint) {
  if (!hint.empty()) throw InvalidArgument(hint);
  throw InvalidArgument(fmt::format("--{} {} is not one of {}", flag, text, names));
}

void throw_unnamed_choice(std::string_view flag, int value) {
  throw InternalError(fmt::format("the value {} of --{}'s enum has no spelling", value, flag));
}

}  // namespace detail

std::string Choices<PipelineSchedule>::hint(std::string_view text) {
  if (!find_choice<LrSchedule>(text)) return "";
  return fmt::format(
      "--schedule {} names a learning-rate schedule; --schedule picks the pipeline schedule "
      "(gpipe, 1f1b), the learning-rate schedule is --lr-schedule",
      text);
}

std::string MeshShape::describe() const {
  std::vector<std::string> dims;
  if (dp > 1) dims.push_back(fmt::format("dp={}", dp));
  if (pp > 1) dims.push_back(fmt::format("pp={}", pp));
  if (tp > 1) dims.push_back(fmt::format("tp={}", tp));
  return dims.empty() ? "dp=1" : fmt::format("{}", fmt::join(dims, ","));
}

MeshShape parse_mesh(const std::string& text) {
  MeshShape shape;
  std::map<std::string, int*> dims = {{"dp", &shape.dp}, {"pp", &shape.pp}, {"tp", &shape.tp}};
  std::map<std::string, bool> seen;
  std::stringstream in(text);
  std::string item;
  TANDEM_CHECK(!text.empty(), "--mesh is empty; give e.g. dp=2,pp=2 or dp=2,tp=2");
  while (std::getline(in, item, ',')) {
    const auto eq = item.find('=');
    const std::string name = item.substr(0, eq);
    TANDEM_CHECK(eq != std::string::npos && dims.count(name) == 1,
                 "--mesh {}: '{}' is not DIM=N with DIM one of dp, pp, tp", text, item);
    TANDEM_CHECK(!seen[name], "--mesh {}: {} is given twice", text, name);
    seen[name] = true;
    const std::string value = item.substr(eq + 1);
    size_t used = 0;
    int n = 0;
    try {
      n = std::stoi(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    TANDEM_CHECK(used == value.size() && !value.empty() && n >= 1,
                 "--mesh {}: {}={} is not a positive integer", text, name, value);
    *dims[name] = n;
  }
  return shape;
}

WrapPolicy parse_wrap_policy(const std::string& text) {
  WrapPolicy w;
  if (text == "auto") return w;
  parallel::FsdpWrapPolicy p;
  try {
    p = parallel::parse_fsdp_wrap_policy(text);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("--wrap-policy: {} (or 'auto')", e.what()));
  }
  w.automatic = false;
  w.module_types = p.module_types;
  w.min_num_params = p.min_num_params;
  w.module_names = p.module_names;
  return w;
}

std::string describe(const WrapPolicy& w) {
  if (w.automatic) return "auto";
  if (!w.module_types.empty()) return fmt::format("type:{}", fmt::join(w.module_types, ","));
  if (w.min_num_params > 0) return fmt::format("size:{}", w.min_num_params);
  if (!w.module_names.empty()) return fmt::format("name:{}", fmt::join(w.module_names, ","));
  return "none";
}

int servers_for(const TrainerOptions& o) {
  const StrategyKind k = o.strategy.kind;
  const bool served = k == StrategyKind::kPs || k == StrategyKind::kEasgd ||
                      (k == StrategyKind::kDdp && o.strategy.async.backup_workers > 0);
  return served ? o.strategy.async.servers : 0;
}

bool is_asynchronous(const TrainerOptions& o) {
  const StrategyKind k = o.strategy.kind;
  return k == StrategyKind::kPs || k == StrategyKind::kEasgd || k == StrategyKind::kGossip ||
         k == StrategyKind::kLocalSgd ||
         (k == StrategyKind::kDdp && o.strategy.async.backup_workers > 0);
}

bool is_sharded(StrategyKind kind) {
  return kind == StrategyKind::kZero1 || kind == StrategyKind::kZero2 ||
         kind == StrategyKind::kZero3;
}

namespace {

void validate_run(const TrainerOptions& o) {
  const RunConfig& r = o.run;
  TANDEM_CHECK(r.batch_size >= 1, "--batch-size must be at least 1 (got {})", r.batch_size);
  TANDEM_CHECK(r.steps >= 0 && r.epochs >= 0 && (r.steps > 0 || r.epochs > 0),
               "give --steps or --epochs a positive value (got {} and {})", r.steps, r.epochs);
  TANDEM_CHECK(o.data.noise >= 0 && o.data.noise <= 1, "--data-noise must be in [0, 1] (got {})",
               o.data.noise);
  TANDEM_CHECK(!o.data.source.empty(),
               "--data is empty; give a path or synthetic-mnist, synthetic-cifar, "
               "synthetic-tokens");
}

void validate_optimizer(const OptimizerConfig& p) {
  TANDEM_CHECK(p.lr > 0, "--lr must be positive (got {})", p.lr);
  TANDEM_CHECK(p.momentum >= 0 && p.weight_decay >= 0 && p.clip_grad_norm >= 0,
               "--momentum, --weight-decay and --clip-grad-norm must be >= 0");
  TANDEM_CHECK(p.warmup_steps >= 0, "--warmup-steps must be >= 0 (got {})", p.warmup_steps);
}

void validate_straggler(const StragglerConfig& s) {
  TANDEM_CHECK(s.delay.delay.count() >= 0 && s.delay.probability >= 0 && s.delay.probability <= 1,
               "--inject-delay {}: ms must be >= 0 and prob in [0, 1]", describe(s.delay));
  TANDEM_CHECK(s.slowdown.factor >= 1, "--inject-slowdown: factor must be >= 1 (got {})",
               s.slowdown.factor);
}

// ps, easgd, gossip, local-sgd and backup workers; `world` counts every rank.
void validate_async(const TrainerOptions& o, int world) {
  const AsyncConfig& a = o.strategy.async;
  const std::string_view strategy = name_of(o.strategy.kind);
  TANDEM_CHECK(a.backup_workers >= 0, "--backup-workers must be >= 0 (got {})", a.backup_workers);
  TANDEM_CHECK(a.backup_workers == 0 || o.strategy.kind == StrategyKind::kDdp,
               "--backup-workers is for --strategy ddp (got --strategy {})", strategy);
  TANDEM_CHECK(a.backup_workers == 0 || o.run.steps > 0,
               "--backup-workers needs --steps: the servers end the run after that many applied "
               "steps");
  if (servers_for(o) > 0) {
    TANDEM_CHECK(a.servers >= 1 && a.servers < world,
                 "--strategy {} serves parameters from the last --servers ranks and trains on the "
                 "others: --servers {} with {} rank(s) leaves {} worker(s); it needs at least one "
                 "server and one worker (launch more ranks or change --servers)",
                 strategy, a.servers, world, std::max(world - a.servers, 0));
    TANDEM_CHECK(a.backup_workers < world - a.servers,
                 "--backup-workers {} must be below the {} workers ({} ranks - {} servers)",
                 a.backup_workers, world - a.servers, world, a.servers);
  }
  TANDEM_CHECK(a.staleness >= -1, "--staleness must be >= -1 (-1: none; got {})", a.staleness);
  TANDEM_CHECK(a.tau >= 1, "--tau must be at least 1 (got {})", a.tau);
  TANDEM_CHECK(a.alpha > 0 && a.alpha <= 1, "--alpha must be in (0, 1] (got {})", a.alpha);
  TANDEM_CHECK(a.sync_every >= 1, "--sync-every must be at least 1 (got {})", a.sync_every);
  TANDEM_CHECK(o.strategy.kind != StrategyKind::kGossip || world >= 2,
               "--strategy gossip needs at least 2 ranks (got {})", world);
  const bool async = is_asynchronous(o);
  TANDEM_CHECK(!async || (o.checkpoint.dir.empty() && o.checkpoint.resume == ResumeMode::kOff),
               "--checkpoint-dir: --strategy {}{} does not write checkpoints yet (its workers "
               "hold different parameters); use ddp or zero1-3 for resumable runs",
               strategy, a.backup_workers > 0 ? " with --backup-workers" : "");
  TANDEM_CHECK(!async || o.strategy.ddp.compression == GradCompression::kNone,
               "--grad-compression needs plain --strategy ddp");
}

void validate_strategy(const TrainerOptions& o, int world) {
  const StrategyConfig& s = o.strategy;
  TANDEM_CHECK(s.kind != StrategyKind::kNone || world == 1,
               "--strategy none trains one process, but {} ranks were started; use --strategy "
               "ddp, or launch one process",
               world);
  TANDEM_CHECK(s.ddp.compression == GradCompression::kNone || s.kind == StrategyKind::kDdp,
               "--grad-compression {} compresses DDP's all-reduce; it needs --strategy ddp",
               name_of(s.ddp.compression));
  TANDEM_CHECK(s.ddp.powersgd_rank >= 1, "--powersgd-rank must be at least 1 (got {})",
               s.ddp.powersgd_rank);
  TANDEM_CHECK(s.ddp.powersgd_start_iter >= 0, "--powersgd-start-iter must be >= 0 (got {})",
               s.ddp.powersgd_start_iter);
}

void validate_observe_and_checkpoint(const TrainerOptions& o) {
  const ObservabilityConfig& v = o.observe;
  const CheckpointConfig& c = o.checkpoint;
  TANDEM_CHECK(v.log_every >= 1 && v.eval_every >= 0,
               "--eval-every must be >= 0 and --log-every >= 1 (got {} and {})", v.eval_every,
               v.log_every);
  TANDEM_CHECK(c.every >= 0 && o.run.stop_at_step >= 0,
               "--checkpoint-every and RunConfig::stop_at_step must be >= 0 (got {} and {})",
               c.every, o.run.stop_at_step);
  TANDEM_CHECK(!c.dir.empty() || (c.every == 0 && c.resume == ResumeMode::kOff),
               "--checkpoint-every and --resume need --checkpoint-dir");
}

void validate_mesh(const TrainerOptions& o, int world) {
  const MeshConfig& c = o.mesh;
  TANDEM_CHECK(c.micro_batches >= 1, "--micro-batches must be at least 1 (got {})",
               c.micro_batches);
  if (!c.shape) return;
  const MeshShape& m = *c.shape;
  const std::string mesh = m.describe();
  TANDEM_CHECK(o.strategy.kind == StrategyKind::kDdp || o.strategy.kind == StrategyKind::kZero1,
               "--mesh averages the data dimension with --strategy ddp or zero1, not {}",
               name_of(o.strategy.kind));
  TANDEM_CHECK(o.strategy.async.backup_workers == 0,
               "--mesh averages the data dimension every step; drop --backup-workers");
  TANDEM_CHECK(m.pp == 1 || has_sequential_layers(o.model.kind),
               "--mesh {}: pipeline parallelism splits --model mlp or gpt-mini into layers, not {}",
               mesh, name_of(o.model.kind));
  TANDEM_CHECK(m.tp == 1 || o.model.kind == ModelKind::kGptMini,
               "--mesh {}: tensor parallelism splits --model gpt-mini, not {}", mesh,
               name_of(o.model.kind));
  TANDEM_CHECK(m.size() == world,
               "--mesh {} needs {} ranks but {} were started; launch that many, or change the "
               "mesh",
               mesh, m.size(), world);
  TANDEM_CHECK(m.pp == 1 || o.run.batch_size % c.micro_batches == 0,
               "--batch-size {} does not split into --micro-batches {}", o.run.batch_size,
               c.micro_batches);
  TANDEM_CHECK(m.pp > 1 || !c.recompute,
               "--recompute recomputes pipeline stages; it needs pp > 1 in --mesh");
  TANDEM_CHECK(o.checkpoint.dir.empty() && o.checkpoint.resume == ResumeMode::kOff,
               "--mesh does not write or resume checkpoints yet; drop --checkpoint-dir");
  TANDEM_CHECK(o.strategy.ddp.compression == GradCompression::kNone,
               "--mesh does not compress gradients yet; drop --grad-compression");
  TANDEM_CHECK(o.straggler.delay.ranks.empty() && o.straggler.slowdown.ranks.empty(),
               "--mesh does not inject stragglers yet; drop --inject-delay/--inject-slowdown");
}

}  // namespace

void validate_options(const TrainerOptions& o, int world_size) {
  TANDEM_CHECK(world_size >= 1, "validate_options: world size {} (expected >= 1)", world_size);
  validate_run(o);
  validate_optimizer(o.optimizer);
  validate_straggler(o.straggler);
  validate_async(o, world_size);
  validate_strategy(o, world_size);
  validate_observe_and_checkpoint(o);
  validate_mesh(o, world_size);
}

}  // namespace tandem::train
