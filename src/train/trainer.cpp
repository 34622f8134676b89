#include "tandem/train/trainer.h"

#include <ATen/ops/argmax.h>
#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "tandem/core/check.h"
#include "tandem/core/trace.h"
#include "tandem/parallel/async/parameter_server.h"
#include "tandem/train/checkpoint.h"
#include "tandem/train/data/distributed_sampler.h"
#include "tandem/train/lr_schedule.h"
#include "tandem/train/mesh_model.h"
#include "tandem/train/models/models.h"
#include "tandem/train/sharded_checkpoint.h"
#include "tandem/train/strategy.h"
#include "tandem/train/straggler.h"
#include "train/async_strategies.h"
#include "train/trainer_support.h"

namespace tandem::train {
namespace {

using Seconds = std::chrono::duration<double>;

void validate(const TrainerOptions& o, int world) {
  TANDEM_CHECK(o.batch_size >= 1, "--batch-size must be at least 1 (got {})", o.batch_size);
  TANDEM_CHECK(o.steps >= 0 && o.epochs >= 0 && (o.steps > 0 || o.epochs > 0),
               "give --steps or --epochs a positive value (got {} and {})", o.steps, o.epochs);
  TANDEM_CHECK(o.lr > 0, "--lr must be positive (got {})", o.lr);
  TANDEM_CHECK(o.data_noise >= 0 && o.data_noise <= 1, "--data-noise must be in [0, 1] (got {})",
               o.data_noise);
  TANDEM_CHECK(o.optimizer == "sgd" || o.optimizer == "adamw",
               "--optimizer {} is not one of sgd, adamw", o.optimizer);
  const std::vector<std::string> strategies = {"none", "ddp",   "zero1",  "zero2",    "zero3",
                                               "ps",   "easgd", "gossip", "local-sgd"};
  TANDEM_CHECK(std::find(strategies.begin(), strategies.end(), o.strategy) != strategies.end(),
               "--strategy {} is not one of {}", o.strategy, fmt::join(strategies, ", "));
  validate_async(o, world);
  TANDEM_CHECK(o.dtype == "float32" || o.dtype == "float64",
               "--dtype {} is not one of float32, float64", o.dtype);
  TANDEM_CHECK(o.strategy != "none" || world == 1,
               "--strategy none trains one process, but {} ranks were started; use --strategy "
               "ddp, or launch one process",
               world);
  TANDEM_CHECK(o.grad_compression == "none" || o.grad_compression == "fp16" ||
                   o.grad_compression == "bf16" || o.grad_compression == "powersgd",
               "--grad-compression {} is not one of none, fp16, bf16, powersgd",
               o.grad_compression);
  TANDEM_CHECK(o.grad_compression == "none" || o.strategy == "ddp",
               "--grad-compression {} compresses DDP's all-reduce; it needs --strategy ddp",
               o.grad_compression);
  TANDEM_CHECK(o.powersgd_rank >= 1, "--powersgd-rank must be at least 1 (got {})",
               o.powersgd_rank);
  TANDEM_CHECK(o.powersgd_start_iter >= 0, "--powersgd-start-iter must be >= 0 (got {})",
               o.powersgd_start_iter);
  TANDEM_CHECK(o.momentum >= 0 && o.weight_decay >= 0 && o.clip_grad_norm >= 0,
               "--momentum, --weight-decay and --clip-grad-norm must be >= 0");
  TANDEM_CHECK(o.warmup_steps >= 0 && o.log_every >= 1 && o.eval_every >= 0,
               "--warmup-steps and --eval-every must be >= 0 and --log-every >= 1");
  TANDEM_CHECK(o.checkpoint_every >= 0 && o.stop_at_step >= 0,
               "--checkpoint-every and TrainerOptions::stop_at_step must be >= 0 (got {} and {})",
               o.checkpoint_every, o.stop_at_step);
  TANDEM_CHECK(!o.checkpoint_dir.empty() || (o.checkpoint_every == 0 && !o.resume),
               "--checkpoint-every and --resume need --checkpoint-dir");
  parse_lr_schedule(o.lr_schedule);
  const bool lr_name = o.pipeline_schedule == "constant" || o.pipeline_schedule == "cosine" ||
                       o.pipeline_schedule == "step";
  TANDEM_CHECK(!lr_name,
               "--schedule {} names a learning-rate schedule; --schedule picks the pipeline "
               "schedule (gpipe, 1f1b), the learning-rate schedule is --lr-schedule",
               o.pipeline_schedule);
  TANDEM_CHECK(o.pipeline_schedule == "gpipe" || o.pipeline_schedule == "1f1b",
               "--schedule {} is not one of gpipe, 1f1b", o.pipeline_schedule);
  TANDEM_CHECK(o.micro_batches >= 1, "--micro-batches must be at least 1 (got {})",
               o.micro_batches);
  if (!o.mesh.empty()) validate_mesh(o, world);
}

// The last metrics line of the strategies of docs/strategies.md (servers too).
void write_summary_line(std::ostream& metrics, const TrainerOptions& o, int rank,
                        const TrainSummary& s) {
  nlohmann::json line = {{"summary", true},
                         {"rank", rank},
                         {"server", s.server},
                         {"strategy", o.strategy},
                         {"steps", s.steps},
                         {"mean_step_s", s.mean_step_seconds},
                         {"wait_s", s.wait_seconds},
                         {"dropped_gradients", s.dropped_gradients}};
  nlohmann::json histogram = nlohmann::json::object();
  for (const auto& [k, n] : s.staleness_histogram) histogram[std::to_string(k)] = n;
  line["staleness_histogram"] = histogram;
  if (s.consensus_distance >= 0) line["consensus_distance"] = s.consensus_distance;
  metrics << line.dump() << "\n";
}

// The settings a resumed run must share with the run that wrote the checkpoint
// for the data order and the optimizer state to carry over.
std::map<std::string, std::string> run_meta(const TrainerOptions& o, int world) {
  return {{"model", o.model},
          {"data", o.data},
          {"dataset_size", std::to_string(o.dataset_size)},
          {"global_batch", std::to_string(o.batch_size * world)},
          {"dtype", o.dtype},
          {"optimizer", o.optimizer},
          {"strategy", o.strategy}};
}

void check_meta(const Checkpoint& ckpt, const TrainerOptions& o, int world) {
  for (const auto& [key, value] : run_meta(o, world)) {
    std::string flag = key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    auto it = ckpt.meta.find(key);
    const std::string saved = it == ckpt.meta.end() ? "(none)" : it->second;
    if (saved != value && key == "global_batch") {
      throw CheckpointError(fmt::format(
          "checkpoint '{}': field 'global_batch': the checkpoint was written with a global batch "
          "(--batch-size x ranks) of {} but this run's is {} ({} x {}); keep the global batch",
          ckpt.path, saved, value, o.batch_size, world));
    }
    if (saved != value) {
      throw CheckpointError(fmt::format(
          "checkpoint '{}': field '{}': the checkpoint was written with --{} {} but this run has "
          "--{} {}; resume with the same settings",
          ckpt.path, key, flag, saved, flag, value));
    }
  }
  if (ckpt.seed != o.seed) {
    throw CheckpointError(fmt::format(
        "checkpoint '{}': field 'seed': the checkpoint was written with --seed {} but this run "
        "has --seed {}; the data order would change, resume with the same seed",
        ckpt.path, ckpt.seed, o.seed));
  }
}

// Buffers of a sharded checkpoint (rank 0's file holds them).
void restore_buffers(const Checkpoint& ckpt, torch::nn::Module& module) {
  auto buffers = module.named_buffers(true);
  TANDEM_CHECK(ckpt.buffers.size() == buffers.size(),
               "checkpoint '{}': {} buffers but the model has {}", ckpt.path, ckpt.buffers.size(),
               buffers.size());
  at::NoGradGuard no_grad;
  for (const auto& [name, t] : ckpt.buffers) {
    const at::Tensor* b = buffers.find(name);
    if (b == nullptr || b->sizes() != t.sizes()) {
      throw CheckpointError(fmt::format("checkpoint '{}': field 'buffer {}': not in this model "
                                        "with that shape; it was written for another model",
                                        ckpt.path, name));
    }
    b->copy_(t);
  }
}

// A sharded checkpoint may be resumed at another world size with the same
// global batch: the sampler deals the epoch out with stride world_size, so
// the samples of global step s are the same whatever the world size, and
// only the per-rank position changes.
void rescale_sampler_position(Checkpoint& ckpt, int saved_world, int world) {
  if (saved_world == world) return;
  const int64_t consumed = ckpt.samples_in_epoch * saved_world;
  if (consumed % world != 0) {
    throw CheckpointError(fmt::format(
        "checkpoint '{}': field 'samples_in_epoch': {} samples of the epoch were consumed by {} "
        "ranks, which {} ranks cannot split evenly; keep --batch-size x ranks equal to the saved "
        "run's",
        ckpt.path, consumed, saved_world, world));
  }
  ckpt.samples_in_epoch = consumed / world;
  ckpt.world_size = world;
}

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
};

EvalResult evaluate(torch::nn::AnyModule& model, const Dataset& data, const ModelInput& spec,
                    const TrainerOptions& o, Communicator& comm) {
  at::NoGradGuard no_grad;
  model.ptr()->eval();
  SamplerOptions so{data.size(), comm.size(), comm.rank(), false, o.seed, true, 0, 0};
  DistributedSampler sampler(so);
  auto idx = sampler.indices();
  double loss_sum = 0, correct = 0, count = 0, batches = 0;
  for (size_t start = 0; start + o.batch_size <= idx.size() && batches < o.eval_batches;
       start += o.batch_size, ++batches) {
    std::span<const int64_t> span(idx.data() + start, o.batch_size);
    Example ex = data.batch(span);
    at::Tensor logits = model.forward(model_input(ex.input, spec, o));
    loss_sum += loss_of(logits, ex.target).item<double>();
    at::Tensor pred = at::argmax(logits, -1);
    correct += pred.eq(ex.target.reshape(pred.sizes())).sum().item<double>();
    count += static_cast<double>(pred.numel());
  }
  model.ptr()->train();
  at::Tensor t = at::tensor(std::vector<double>{loss_sum, batches, correct, count}, at::kDouble);
  comm.all_reduce(t);
  const double* v = t.data_ptr<double>();
  return EvalResult{v[1] > 0 ? v[0] / v[1] : 0.0, v[3] > 0 ? v[2] / v[3] : 0.0};
}

}  // namespace

TrainSummary train(const TrainerOptions& o, const std::shared_ptr<Communicator>& comm,
                   std::ostream* out) {
  TANDEM_CHECK(comm != nullptr, "train: the communicator is null");
  validate(o, comm->size());
  const bool lead = comm->rank() == 0;
  if (!lead) out = nullptr;
  if (!o.mesh.empty()) return train_on_mesh(o, comm, out);

  ModelOptions mo;
  ModelInput spec = input_spec(o.model, mo);
  Datasets sets = make_datasets(o, spec);
  auto& data = sets.train;

  at::manual_seed(o.seed);
  torch::nn::AnyModule model = make_model(o.model, mo);
  if (o.dtype == "float64") model.ptr()->to(at::kDouble);
  // Parameter-server strategies: the last --servers ranks serve and the
  // others train; the trainer's collectives (log, eval) run among the latter.
  std::shared_ptr<Communicator> workers = comm;
  if (servers_for(o) > 0) {
    const bool serving = parallel::PsRoles::of(comm->size(), o.servers).is_server(comm->rank());
    workers = comm->split(serving ? 1 : 0);
    if (serving) {
      TrainSummary s = serve_parameters(o, model.ptr(), comm);
      std::ofstream metrics = open_metrics(o, comm->rank());
      if (metrics.is_open()) write_summary_line(metrics, o, comm->rank(), s);
      return s;
    }
  }
  // Every rank reads the checkpoint and checks it before any collective.
  std::optional<Checkpoint> resumed;
  std::optional<LoadedShards> shards;
  if (o.resume) {
    const std::string path = latest_checkpoint(o.checkpoint_dir);
    if (is_sharded_checkpoint(path)) {
      shards = read_sharded_checkpoint(path, comm->rank(), comm->size());
      resumed = shards->base;
      resumed->path = path;
      check_meta(*resumed, o, comm->size());
      rescale_sampler_position(*resumed, shards->saved_world_size, comm->size());
    } else {
      resumed = read_checkpoint(path);
      check_world_size(*resumed, comm->size());
      check_meta(*resumed, o, comm->size());
    }
  }
  std::shared_ptr<TraceRecorder> trace = open_trace(o, comm->rank());
  auto strategy = make_strategy(o, model.ptr(), comm, trace, workers);
  const auto activations = track_activations(o);
  if (shards) {
    strategy->restore_sharded(*shards);
    restore_buffers(shards->base, *model.ptr());
    shards.reset();
  } else if (resumed) {
    strategy->restore(*resumed);
  }
  const double base_lr = o.scale_lr ? o.lr * workers->size() : o.lr;
  auto sched = parse_lr_schedule(o.lr_schedule);

  SamplerOptions so{data->size(), workers->size(), workers->rank(), true, o.seed, false, 0, 0};
  DistributedSampler sampler(so);
  const int64_t total = total_steps(o, sampler.size());
  const int64_t stop = o.stop_at_step > 0 ? std::min(o.stop_at_step, total) : total;
  TANDEM_CHECK(o.grad_compression != "powersgd" || o.powersgd_start_iter < total,
               "--powersgd-start-iter {} is not below the run's {} steps, so PowerSGD would "
               "never start; lower it (0 compresses from the first step)",
               o.powersgd_start_iter, total);

  std::ofstream metrics = open_metrics(o, comm->rank());
  if (out) {
    std::string compression;
    if (o.grad_compression == "powersgd") {
      compression =
          fmt::format(" (powersgd rank {} from step {})", o.powersgd_rank, o.powersgd_start_iter);
    } else if (o.grad_compression != "none") {
      compression = fmt::format(" ({} gradients)", o.grad_compression);
    }
    *out << fmt::format(
        "tandem train: {} on {}, {} rank(s) on {}, strategy {}{}{}, "
        "batch {} per rank, {} lr {}, {} steps\n",
        o.model, data->describe(), comm->size(), comm->backend(), o.strategy, compression,
        strategy_details(o, comm->size()), o.batch_size, o.optimizer, base_lr, total);
  }

  Progress progress(out, total);
  TrainSummary s;
  double window_loss = 0;
  int64_t window_steps = 0;
  std::vector<int64_t> idx;
  size_t cursor = 0;
  int64_t epoch = -1;
  int64_t first_step = 0;
  bool window_is_first = true;
  if (resumed) {
    // The sampler skips the samples of the epoch already consumed, so the
    // loop sees the same batches as a run that never stopped.
    if (resumed->samples_in_epoch > sampler.size()) {
      throw CheckpointError(fmt::format(
          "checkpoint '{}': field 'samples_in_epoch': {} samples of the epoch were consumed but "
          "this rank's epoch now has only {}; did the data set change?",
          resumed->path, resumed->samples_in_epoch, sampler.size()));
    }
    so.epoch = resumed->epoch;
    so.start_offset = resumed->samples_in_epoch;
    sampler = DistributedSampler(so);
    epoch = resumed->epoch;
    idx = sampler.indices();
    first_step = resumed->step;
    restore_rng(*resumed);
    if (out) {
      *out << fmt::format("resumed from '{}' at step {} (epoch {}, {} samples in)\n", resumed->path,
                          first_step, epoch, resumed->samples_in_epoch);
    }
    resumed.reset();
  }
  auto save = [&](int64_t steps_done) {
    if (o.checkpoint_dir.empty() || (!lead && !strategy->sharded())) return;
    Checkpoint ck;
    ck.step = steps_done;
    ck.epoch = epoch;
    ck.samples_in_epoch = sampler.start_offset() + static_cast<int64_t>(cursor);
    ck.seed = o.seed;
    ck.world_size = comm->size();
    ck.meta = run_meta(o, comm->size());
    capture_rng(ck);
    if (strategy->sharded()) {
      for (const auto& item : model.ptr()->named_buffers(true)) {
        ck.buffers.emplace_back(item.key(), item.value().detach().clone());
      }
      write_sharded_checkpoint(o.checkpoint_dir, ck, strategy->sharded_state(), *comm);
    } else {
      strategy->capture(ck);
      write_checkpoint(o.checkpoint_dir, ck);
    }
  };
  Straggler straggler(parse_inject_delay(o.inject_delay), parse_inject_slowdown(o.inject_slowdown),
                      comm->rank(), o.seed);
  const bool synchronous = strategy->synchronous();
  int64_t steps_done = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = first_step; step < stop && !strategy->finished(); ++step) {
    if (cursor + o.batch_size > idx.size()) {
      sampler.set_epoch(++epoch);
      idx = sampler.indices();
      cursor = 0;
    }
    std::span<const int64_t> span(idx.data() + cursor, o.batch_size);
    cursor += o.batch_size;
    Example ex = data->batch(span);
    strategy->set_lr(learning_rate(sched, base_lr, step, o.warmup_steps, total));
    strategy->zero_grad();
    const auto t0 = std::chrono::steady_clock::now();
    at::Tensor loss = loss_of(model.forward(model_input(ex.input, spec, o)), ex.target);
    const auto t1 = std::chrono::steady_clock::now();
    const auto slept = straggler.before_backward();
    loss.backward();  // with DDP, includes the wait for the last buckets
    straggler.after_compute(std::chrono::steady_clock::now() - t0 - slept);
    const auto t2 = std::chrono::steady_clock::now();
    if (o.clip_grad_norm > 0) strategy->clip_grad_norm(o.clip_grad_norm);
    strategy->step();
    if (trace) {
      const auto t3 = std::chrono::steady_clock::now();
      trace->span("forward", "compute", t0, t1);
      trace->span("backward", "compute", t1, t2);
      trace->span("optimizer step", "compute", t2, t3);
    }
    window_loss += loss.item<double>();
    ++window_steps;
    ++steps_done;
    const bool last = step + 1 == stop || strategy->finished();
    if (!last && o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0) save(step + 1);
    if ((step + 1) % o.log_every == 0 || last) {
      // Asynchronous strategies log this rank's own loss: a collective
      // here would make every worker wait for the slowest.
      double mean = synchronous ? average_over_ranks(*workers, {window_loss / window_steps})[0]
                                : window_loss / window_steps;
      if (window_is_first) s.first_loss = mean;
      window_is_first = false;
      s.final_loss = mean;
      double elapsed = Seconds(std::chrono::steady_clock::now() - start).count();
      const int64_t done = step + 1 - first_step;
      double sps = static_cast<double>(done * o.batch_size * workers->size()) / elapsed;
      progress.update(step + 1, epoch, mean, sps, elapsed / done * (stop - step - 1));
      if (metrics.is_open()) {
        const int64_t sent = strategy->gradient_bytes();
        nlohmann::json line = {{"step", step + 1},       {"epoch", epoch},
                               {"rank", comm->rank()},   {"loss", window_loss / window_steps},
                               {"loss_all_ranks", mean}, {"samples_per_s", sps},
                               {"elapsed_s", elapsed},   {"all_reduce_bytes", sent},
                               {"strategy", o.strategy}, {"wait_s", strategy->stats().wait_seconds}};
        if (!synchronous) line["loss_all_ranks"] = nullptr;  // not measured: no collective
        metrics << line.dump() << "\n";
      }
      window_loss = 0;
      window_steps = 0;
    }
    if (o.eval_every > 0 && (step + 1) % o.eval_every == 0 && !last) {
      auto e = evaluate(model, sets.eval(), spec, o, *workers);
      strategy->end_forward_only();
      if (out)
        *out << fmt::format("eval at step {}: loss {:.4f}, accuracy {:.3f}\n", step + 1, e.loss,
                            e.accuracy);
    }
  }
  progress.done();
  const double train_seconds = Seconds(std::chrono::steady_clock::now() - start).count();
  strategy->finish();
  if (trace) write_trace(*trace, o, comm->rank(), out);
  if (stop > first_step) save(stop);
  s.state_digest = state_digest(strategy->full_parameters(), model.ptr()->named_buffers(true));
  s.steps = steps_done;
  // Workers of asynchronous strategies may run different numbers of steps.
  s.samples = static_cast<int64_t>(
      average_over_ranks(*workers, {static_cast<double>(steps_done)})[0] * workers->size() + 0.5) *
      o.batch_size;
  s.wall_seconds = Seconds(std::chrono::steady_clock::now() - start).count();
  s.samples_per_second = static_cast<double>(s.samples) / s.wall_seconds;
  s.workers = workers->size();
  s.mean_step_seconds = steps_done > 0 ? train_seconds / steps_done : 0.0;
  const Strategy::Stats stats = strategy->stats();
  s.wait_seconds = stats.wait_seconds;
  s.staleness_histogram = stats.staleness;
  s.dropped_gradients = stats.dropped_gradients;
  s.consensus_distance = stats.consensus_distance;
  // The strategies of docs/strategies.md end their metrics with what they measured.
  const bool async_summary = servers_for(o) > 0 || !synchronous;
  if (metrics.is_open() && async_summary) write_summary_line(metrics, o, comm->rank(), s);
  auto e = evaluate(model, sets.eval(), spec, o, *workers);
  strategy->end_forward_only();
  s.eval_loss = e.loss;
  s.eval_accuracy = e.accuracy;
  record_memory(s, strategy->memory());
  if (out) *out << memory_line(s, o.strategy);
  if (out && async_summary) *out << strategy_summary(o, s);
  if (out) *out << summary_line(s);
  return s;
}

}  // namespace tandem::train
