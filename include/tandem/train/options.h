// TrainerOptions: everything one training run takes, as typed groups (the
// model, the data, the optimizer, the strategy with its ddp, zero and async
// parts, the mesh, straggler injection, checkpoints, what to observe, and
// the run's length). `tandem train` fills it from flags and YAML through one
// table (config.h); library users set the fields directly. Each group's
// fields name the flag that sets them.
//
// The groups are "...Config" because tandem::parallel already has
// DdpOptions and ZeroOptions, and the model zoo ModelOptions.
//
// validate_options() checks the whole struct once, before any collective;
// train(), make_strategy() and MeshModel take it validated. Plain data:
// thread-compatible. Nothing here is collective.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tandem/train/choices.h"
#include "tandem/train/straggler.h"

namespace tandem::train {

struct ModelConfig {
  ModelKind kind = ModelKind::kMlp;  // --model
  Dtype dtype = Dtype::kFloat32;     // --dtype
};

struct DataConfig {
  // --data: a path, or synthetic-mnist | synthetic-cifar | synthetic-tokens.
  std::string source = "synthetic-mnist";
  // --data-format: how to read a path; auto detects it (make_dataset.h).
  DataFormat format = DataFormat::kAuto;
  int64_t synthetic_size = 0;  // --dataset-size: synthetic samples; 0: the real set's size
  double noise = 0.25;         // --data-noise: synthetic per-sample noise in [0, 1] (harder near 1)
};

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kSgd;     // --optimizer
  double lr = 0.05;                             // --lr
  double momentum = 0.9;                        // --momentum (sgd)
  bool nesterov = false;                        // --nesterov (sgd)
  double weight_decay = 0.0;                    // --weight-decay
  int64_t warmup_steps = 0;                     // --warmup-steps: linear warmup from 0
  LrSchedule schedule = LrSchedule::kConstant;  // --lr-schedule
  bool scale_lr = false;        // --scale-lr: lr x training ranks (linear scaling rule)
  double clip_grad_norm = 0.0;  // --clip-grad-norm: the global 2-norm's bound; 0: off
};

// --strategy ddp: gradient compression of the all-reduce (see
// parallel/distributed_data_parallel.h and powersgd.h). With powersgd: the
// approximation rank r, and how many steps use plain all-reduce first (it
// must be below the run's steps, or PowerSGD would never start; counted
// again from a resumed step, since PowerSGD state is not checkpointed).
struct DdpConfig {
  GradCompression compression = GradCompression::kNone;  // --grad-compression
  int64_t powersgd_rank = 1;                             // --powersgd-rank
  int64_t powersgd_start_iter = 100;                     // --powersgd-start-iter
};

// --wrap-policy, zero3's units: auto (the zoo model's repeated block:
// GptBlockImpl, BasicBlockImpl, BottleneckImpl, or each Linear), or one of
// parallel::parse_fsdp_wrap_policy's forms: type:A,B (module types),
// size:N (submodules of at least N parameters), name:a,b (submodule
// paths), none (one unit).
struct WrapPolicy {
  bool automatic = true;  // "auto"; the fields below are then unused
  std::vector<std::string> module_types;
  int64_t min_num_params = 0;
  std::vector<std::string> module_names;
};

struct ZeroConfig {
  WrapPolicy wrap;  // zero3 only
};

// ps, easgd, gossip, local-sgd, and ddp with backup workers (see
// parallel/async/ and docs/strategies.md).
struct AsyncConfig {
  // --servers: under ps, easgd, and ddp with backup_workers > 0, how many of
  // the last ranks serve parameters (each owns a shard); the others train.
  int servers = 1;
  int64_t staleness = -1;  // --staleness (ps): the stale-synchronous bound; -1: none
  // --tau and --alpha (easgd): steps between elastic exchanges, and the
  // elastic coefficient in (0, 1]; --momentum/--nesterov on the local SGD
  // give the momentum variant (EAMSGD).
  int64_t tau = 4;
  double alpha = 0.25;
  int64_t sync_every = 4;  // --sync-every (local-sgd): steps between averages (1 = ddp with SGD)
  GossipMode gossip = GossipMode::kPush;  // --gossip
  // --backup-workers (ddp): each step applies the first (workers -
  // backup_workers) gradients through the servers and drops the late ones
  // (Chen et al. 2016).
  int backup_workers = 0;
};

struct StrategyConfig {
  // --strategy: none | ddp | zero1 | zero2 | zero3 (parallel/zero_optimizer.h,
  // fully_sharded_data_parallel.h) | ps | easgd | gossip | local-sgd. zero1-3
  // write sharded checkpoints (sharded_checkpoint.h) that resume at another
  // world size when batch_size x ranks stays the same.
  StrategyKind kind = StrategyKind::kDdp;
  double bucket_cap_mb = 25.0;  // --bucket-cap-mb: DDP's and ZeRO-1/2's buckets, in MiB
  DdpConfig ddp;
  ZeroConfig zero;
  AsyncConfig async;
};

// A data x pipeline x tensor grid (mesh_model.h); product = world size.
struct MeshShape {
  int dp = 1, pp = 1, tp = 1;
  int size() const { return dp * pp * tp; }
  // "dp=2,pp=2": the dimensions above 1, in dp, pp, tp order ("dp=1" for none).
  std::string describe() const;
};

struct MeshConfig {
  // --mesh "dp=2,pp=2", "dp=2,tp=2", "pp=2,tp=2", ...; nullopt: the strategy alone.
  std::optional<MeshShape> shape;
  int micro_batches = 4;                                // --micro-batches (pipeline)
  PipelineSchedule schedule = PipelineSchedule::k1F1B;  // --schedule (pipeline)
  bool recompute = false;  // --recompute: recompute pipeline activations in backward
};

// --inject-delay and --inject-slowdown (straggler.h); empty: none.
struct StragglerConfig {
  InjectDelay delay;
  InjectSlowdown slowdown;
};

// Checkpoints (checkpoint.h): rank 0 (each rank under zero1-3) writes
// DIR/step-<N>.ckpt every `every` steps and at the end of the run. Resuming
// continues from DIR/latest: model, optimizer, step, sampler position and
// RNG state, so the data order continues exactly.
struct CheckpointConfig {
  std::string dir;    // --checkpoint-dir; "": none
  int64_t every = 0;  // --checkpoint-every: steps between checkpoints; 0: only at the end
  ResumeMode resume = ResumeMode::kOff;  // --resume[=require]
};

// Elastic runs (under tandem-run --min-workers/--max-workers; see
// docs/elastic.md). kGlobal keeps the global batch (batch_size times the
// first generation's size) and the global sample order whatever the world
// size, so the run computes what an uninterrupted one would; kPerRank keeps
// batch_size per rank and scales the learning rate with the world size.
struct ElasticConfig {
  ElasticBatch batch = ElasticBatch::kGlobal;  // --elastic-batch
  // Set by train_elastic(): the run is elastic (no flag; tandem-run's
  // environment decides).
  bool enabled = false;
};

struct ObservabilityConfig {
  int64_t log_every = 10;    // --log-every: steps between progress lines (off a terminal)
  int64_t eval_every = 0;    // --eval-every: steps between evaluations; 0: at the end only
  int64_t eval_batches = 8;  // batches per evaluation (no flag; tests lower it)
  // --track-activations: count live activations beside the model state in
  // the memory accounting (parallel/activation_tracker.h); the summary then
  // shows them. Watches every op's outputs, so steps run slower (measured
  // in docs/training.md).
  bool track_activations = false;
  // --metrics: JSON lines per log step, flushed line by line; {rank} expands; "": none.
  std::string metrics_file;
  // --trace-dir: a Chrome trace per rank (DIR/rank-<r>.json): forward,
  // backward, optimizer step, and with ddp each bucket's all-reduce.
  std::string trace_dir;
};

struct RunConfig {
  int64_t steps = 0;        // --steps: optimizer steps; 0: run `epochs`
  int64_t epochs = 1;       // --epochs
  int64_t batch_size = 32;  // --batch-size: samples per (data) rank and step
  uint64_t seed = 0;        // --seed: of the weights and the data order
  // Stop after this many steps (counted from 0, not from the resumed step)
  // as if the run were interrupted, writing a checkpoint first; steps and
  // epochs still define the schedule. 0: off. No flag; for resume tests.
  int64_t stop_at_step = 0;
};

struct TrainerOptions {
  RunConfig run;
  ModelConfig model;
  DataConfig data;
  OptimizerConfig optimizer;
  StrategyConfig strategy;
  MeshConfig mesh;
  StragglerConfig straggler;
  CheckpointConfig checkpoint;
  ElasticConfig elastic;
  ObservabilityConfig observe;
};

// "dp=2,pp=2", "tp=4", "dp=2,pp=2,tp=2", ...: names dp, pp, tp, each at
// most once, extents >= 1, the missing ones 1. Throws InvalidArgument
// naming --mesh and the problem.
MeshShape parse_mesh(const std::string& text);

// "auto", or a form of parallel::parse_fsdp_wrap_policy. Throws
// InvalidArgument naming --wrap-policy.
WrapPolicy parse_wrap_policy(const std::string& text);
// The text parse_wrap_policy reads back into `policy`.
std::string describe(const WrapPolicy& policy);

// How many of the last ranks serve parameters under `o`: o.strategy.async.
// servers for ps, easgd and ddp with backup workers; 0 otherwise.
int servers_for(const TrainerOptions& o);

// True for the strategies whose workers do not meet every step: ps, easgd,
// gossip, local-sgd, and ddp with backup workers.
bool is_asynchronous(const TrainerOptions& o);

// True for zero1, zero2 and zero3, which write sharded checkpoints.
bool is_sharded(StrategyKind kind);

// Checks `o` for a run on `world_size` ranks: every value's range, the
// combinations (e.g. --grad-compression needs --strategy ddp), the
// asynchronous strategies' roles, straggler injection and the mesh.
// Throws InvalidArgument naming the flag, the value and what to do.
void validate_options(const TrainerOptions& o, int world_size);

}  // namespace tandem::train
