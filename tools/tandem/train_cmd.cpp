#include "train_cmd.h"

#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>

#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"
#include "tandem/train/trainer.h"

namespace tandem::tools {

void add_train(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<train::TrainerOptions>();
  auto backend = std::make_shared<std::string>("auto");
  auto threads = std::make_shared<int>(1);
  auto* cmd = app.add_subcommand(
      "train", "Train a model (run under tandem-run for several ranks; synthetic data by default)");
  cmd->add_option("--model", o->model, "mlp|convnet|resnet18|resnet50|gpt-mini");
  cmd->add_option("--data", o->data, "a path, or synthetic-mnist|synthetic-cifar|synthetic-tokens");
  cmd->add_option("--dataset-size", o->dataset_size, "synthetic samples (default: the real set's)");
  cmd->add_option("--steps", o->steps, "optimizer steps (overrides --epochs)");
  cmd->add_option("--epochs", o->epochs, "epochs (default 1)");
  cmd->add_option("--batch-size", o->batch_size, "samples per rank per step (default 32)");
  cmd->add_option("--optimizer", o->optimizer, "sgd|adamw");
  cmd->add_option("--lr", o->lr, "learning rate (default 0.05)");
  cmd->add_option("--momentum", o->momentum, "SGD momentum (default 0.9)");
  cmd->add_flag("--nesterov", o->nesterov, "Nesterov momentum");
  cmd->add_option("--weight-decay", o->weight_decay, "weight decay (default 0)");
  cmd->add_option("--warmup-steps", o->warmup_steps, "linear warmup steps");
  cmd->add_option("--schedule", o->schedule, "constant|cosine|step");
  cmd->add_flag("--scale-lr", o->scale_lr, "multiply --lr by the world size");
  cmd->add_option("--clip-grad-norm", o->clip_grad_norm, "clip the gradient norm (0: off)");
  cmd->add_option("--seed", o->seed, "seed of weights and data order");
  cmd->add_option("--threads", *threads, "intra-op threads per rank (default 1)");
  cmd->add_option("--strategy", o->strategy, "none|ddp (default ddp)");
  cmd->add_option("--bucket-cap-mb", o->bucket_cap_mb, "DDP bucket size in MiB (default 25)");
  cmd->add_option("--grad-compression", o->grad_compression,
                  "none|fp16|bf16|powersgd: compress DDP's all-reduce (default none)");
  cmd->add_option("--powersgd-rank", o->powersgd_rank, "PowerSGD approximation rank (default 1)");
  cmd->add_option("--powersgd-start-iter", o->powersgd_start_iter,
                  "steps of plain all-reduce before PowerSGD starts (default 100)");
  cmd->add_option("--backend", *backend, "auto|shm|gloo|mpi");
  cmd->add_option("--eval-every", o->eval_every, "steps between evaluations (0: at the end)");
  cmd->add_option("--log-every", o->log_every, "steps between progress updates (default 10)");
  cmd->add_option("--metrics", o->metrics_file, "append JSON lines to FILE ({rank} expands)");
  cmd->add_option("--trace-dir", o->trace_dir,
                  "write a Chrome trace per rank to DIR/rank-<r>.json");
  cmd->add_option("--checkpoint-dir", o->checkpoint_dir,
                  "write checkpoints to DIR (rank 0; atomic; DIR/latest names the newest)");
  cmd->add_option("--checkpoint-every", o->checkpoint_every,
                  "steps between checkpoints (0: only at the end)");
  cmd->add_flag("--resume", o->resume,
                "continue from DIR/latest of --checkpoint-dir with the same data order");
  cmd->callback([o, backend, threads, &exit_code] {
    TANDEM_CHECK(*threads >= 1, "--threads must be at least 1 (got {})", *threads);
    at::set_num_threads(*threads);
    InitOptions io;
    io.backend = *backend;
    auto comm = init(io);
    train::train(*o, comm, &std::cout);
    exit_code = 0;
  });
}

}  // namespace tandem::tools
