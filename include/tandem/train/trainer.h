// The training loop behind `tandem train`: a model from the zoo, a data set
// (real files or synthetic), an optimizer with a learning-rate schedule, and
// a strategy (none: one process; ddp: DistributedDataParallel; zero1-3;
// the asynchronous ps, easgd, gossip and local-sgd), on the communicator it
// is given. Under ps, easgd and ddp with backup workers the last --servers
// ranks serve parameters instead of training. With --mesh the ranks form a
// data x pipeline x tensor grid (mesh_model.h). Rank 0 reports progress (a
// bar on a terminal, plain lines otherwise) and every rank can append JSON
// lines of metrics.
// Every rank calls train() with the same options. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>

#include "tandem/comm/communicator.h"

namespace tandem::train {

struct TrainerOptions {
  std::string model = "mlp";             // mlp | convnet | resnet18 | resnet50 | gpt-mini
  std::string data = "synthetic-mnist";  // a path, or synthetic-mnist|cifar|tokens
  int64_t dataset_size = 0;              // synthetic samples; 0: the real set's size
  double data_noise = 0.25;  // synthetic: weight of per-sample noise in [0, 1] (harder near 1)
  int64_t steps = 0;                     // optimizer steps; 0: run `epochs`
  int64_t epochs = 1;
  int64_t batch_size = 32;        // per rank
  std::string optimizer = "sgd";  // sgd | adamw
  double lr = 0.05;
  double momentum = 0.9;  // sgd
  bool nesterov = false;  // sgd
  double weight_decay = 0.0;
  int64_t warmup_steps = 0;
  std::string lr_schedule = "constant";  // constant | cosine | step
  bool scale_lr = false;              // lr x world size (linear scaling rule)
  double clip_grad_norm = 0.0;        // 0: off
  uint64_t seed = 0;
  // Parameter dtype: float32 (default) or float64 (slower; for exact
  // comparisons between strategies and world sizes).
  std::string dtype = "float32";
  // none | ddp | zero1 | zero2 | zero3 (see parallel/zero_optimizer.h and
  // fully_sharded_data_parallel.h) | ps | easgd | gossip | local-sgd (see
  // parallel/async/ and docs/strategies.md). zero1-3 write sharded checkpoints
  // (sharded_checkpoint.h) that resume at another world size when
  // batch_size x ranks stays the same.
  std::string strategy = "ddp";
  // zero3 units: auto (the zoo model's block: GptBlockImpl, BasicBlockImpl,
  // BottleneckImpl, or each Linear), type:A,B (module types), size:N
  // (submodules of at least N parameters), name:a,b (submodule paths), none
  // (one unit).
  std::string wrap_policy = "auto";
  double bucket_cap_mb = 25.0;
  // DDP gradient compression: none | fp16 | bf16 | powersgd (see
  // parallel/distributed_data_parallel.h and powersgd.h). With powersgd: the
  // approximation rank r, and how many steps use plain all-reduce first (it
  // must be below the run's steps, or PowerSGD would never start; counted
  // again from a resumed step, since PowerSGD state is not checkpointed).
  std::string grad_compression = "none";
  int64_t powersgd_rank = 1;
  int64_t powersgd_start_iter = 100;
  // ps, easgd, and ddp with backup_workers > 0: how many of the last ranks
  // serve parameters (each owns a shard); the others train.
  int servers = 1;
  // ps: the stale-synchronous bound in steps (-1: fully asynchronous).
  int64_t staleness = -1;
  // easgd: steps between elastic exchanges (tau), and the elastic
  // coefficient alpha; --momentum/--nesterov on the local SGD give the
  // momentum variant (EAMSGD).
  int64_t tau = 4;
  double alpha = 0.25;
  // local-sgd: steps between parameter averages (H; 1 equals ddp with SGD).
  int64_t sync_every = 4;
  // gossip: push | pull.
  std::string gossip = "push";
  // ddp: each step applies the first (workers - backup_workers) gradients
  // through the servers and drops the late ones (Chen et al. 2016).
  int backup_workers = 0;
  // Model parallelism (mesh_model.h): "dp=2,pp=2", "dp=2,tp=2",
  // "pp=2,tp=2", ... ("" = the strategy alone); the pipeline's micro-batches
  // per step, its schedule (gpipe | 1f1b) and activation recomputation.
  std::string mesh;
  int micro_batches = 4;
  std::string pipeline_schedule = "1f1b";
  bool recompute = false;
  // Straggler injection (train/straggler.h): "ranks=1,ms=200,prob=0.2" and
  // "ranks=1,factor=2"; "" = none.
  std::string inject_delay;
  std::string inject_slowdown;
  int64_t eval_every = 0;  // steps between evaluations; 0: at the end only
  int64_t eval_batches = 8;
  int64_t log_every = 10;  // steps between progress lines off a terminal
  // Count live activations beside the model state in the memory accounting
  // (parallel/activation_tracker.h); the summary then shows them. Watches
  // every op's outputs: steps measured up to 6% slower (`tandem bench memory
  // --tracker-overhead-rounds`).
  bool track_activations = false;
  // Chrome trace per rank (DIR/rank-<r>.json): forward, backward, optimizer
  // step, and with ddp each bucket's all-reduce from launch to completion.
  std::string trace_dir;
  std::string metrics_file;  // JSON lines per log step; "" = none; {rank} expands
  // Checkpoints (see checkpoint.h): rank 0 writes DIR/step-<N>.ckpt every
  // `checkpoint_every` steps (0: only at the end) and at the end of the run;
  // "" = none. `resume` continues from DIR/latest: model, optimizer, step,
  // sampler position and RNG state, so the data order continues exactly.
  std::string checkpoint_dir;
  int64_t checkpoint_every = 0;
  bool resume = false;
  // Stop after this many steps (counted from 0, not from the resumed step) as
  // if the run were interrupted, writing a checkpoint first; `steps`/`epochs`
  // still define the schedule. 0: off. For resume tests.
  int64_t stop_at_step = 0;
};

struct TrainSummary {
  int64_t steps = 0;    // steps run by this call (from the resumed step, if any)
  int64_t samples = 0;  // over all ranks
  double wall_seconds = 0;
  double samples_per_second = 0;
  double first_loss = 0;
  double final_loss = 0;  // mean of the last log window, averaged over ranks
  double eval_loss = 0;
  double eval_accuracy = 0;  // fraction of correct predictions (tokens for gpt-mini)
  // This rank's model-state bytes (parameters, gradients, optimizer state),
  // as the strategy measured them at the end and at peak.
  int64_t parameter_bytes = 0;
  int64_t gradient_bytes = 0;
  int64_t optimizer_bytes = 0;
  int64_t peak_model_state_bytes = 0;
  // With track_activations: the most activation bytes in one sample (0
  // without), and the most model state plus activations in one sample.
  int64_t peak_activation_bytes = 0;
  int64_t peak_bytes_with_activations = 0;
  // state_digest() (checkpoint.h) of this rank's model after the last step:
  // equal on every rank under ddp, and equal for a resumed run and a straight
  // one exactly when their parameters and buffers are bitwise the same.
  uint64_t state_digest = 0;
  // Strategy measurements (docs/strategies.md), this rank's unless said.
  bool server = false;             // this rank served parameters and did not train
  int64_t workers = 0;             // ranks that trained
  double mean_step_seconds = 0;    // this rank's wall time per step
  double wait_seconds = 0;         // this rank's time in communication and waits
  // ps: SSP staleness -> updates; easgd: exchanges by others in between -> exchanges.
  // On a server, every update it applied; on a worker, its own.
  std::map<int64_t, int64_t> staleness_histogram;
  int64_t dropped_gradients = 0;   // ddp with backups: this rank's late gradients
  double consensus_distance = -1;  // gossip, easgd, local-sgd at the end; -1: not measured
};

// Validates `options` (InvalidArgument naming the flag) and trains. `out`
// receives rank 0's progress and summary (nullptr: silent).
TrainSummary train(const TrainerOptions& options, const std::shared_ptr<Communicator>& comm,
                   std::ostream* out);

}  // namespace tandem::train
