// train() under --mesh: the loop of trainer.cpp over a MeshModel. The
// sampler shards over the data dimension only; every rank of a pipeline or
// tensor group reads the same batch.
#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tandem/core/check.h"
#include "tandem/train/checkpoint.h"
#include "tandem/train/data/distributed_sampler.h"
#include "tandem/train/lr_schedule.h"
#include "tandem/train/mesh_model.h"
#include "train/trainer_support.h"

namespace tandem::train {
namespace {

using Seconds = std::chrono::duration<double>;

MeshModel::EvalSums evaluate(MeshModel& model, const Dataset& data, const ModelInput& spec,
                             const TrainerOptions& o) {
  const auto& dp = model.data();
  SamplerOptions so{data.size(), dp->size(), dp->rank(), false, o.seed, true, 0, 0};
  auto idx = DistributedSampler(so).indices();
  MeshModel::EvalSums total;
  for (size_t start = 0, b = 0;
       start + o.batch_size <= idx.size() && b < static_cast<size_t>(o.eval_batches);
       start += o.batch_size, ++b) {
    Example ex = data.batch(std::span<const int64_t>(idx.data() + start, o.batch_size));
    auto sums = model.evaluate(model_input(ex.input, spec, o), ex.target);
    total.loss += sums.loss;
    total.correct += sums.correct;
    total.count += sums.count;
  }
  return total;
}

}  // namespace

TrainSummary train_on_mesh(const TrainerOptions& o, const std::shared_ptr<Communicator>& comm,
                           std::ostream* out) {
  const ModelInput spec = input_spec(o.model, ModelOptions{});
  Datasets sets = make_datasets(o, spec);
  std::shared_ptr<TraceRecorder> trace = open_trace(o, comm->rank());
  MeshModel model(o, comm, trace);
  const auto activations = track_activations(o);
  const auto& dp = model.data();
  SamplerOptions so{sets.train->size(), dp->size(), dp->rank(), true, o.seed, false, 0, 0};
  DistributedSampler sampler(so);
  const int64_t total = total_steps(o, sampler.size());
  const double base_lr = o.scale_lr ? o.lr * dp->size() : o.lr;
  const auto sched = parse_lr_schedule(o.lr_schedule);
  if (out) {
    *out << fmt::format(
        "tandem train: {} on {}, {} ranks on {}, mesh {}, strategy {} over dp, batch {} per data "
        "rank, {} lr {}, {} steps\n",
        o.model, sets.train->describe(), comm->size(), comm->backend(), model.describe(),
        o.strategy, o.batch_size, o.optimizer, base_lr, total);
  }
  std::ofstream metrics = open_metrics(o, comm->rank());
  Progress progress(out, total);
  TrainSummary s;
  std::vector<int64_t> idx;
  size_t cursor = 0;
  int64_t epoch = -1;
  double window_loss = 0;
  int64_t window_steps = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < total; ++step) {
    if (cursor + o.batch_size > idx.size()) {
      sampler.set_epoch(++epoch);
      idx = sampler.indices();
      cursor = 0;
    }
    Example ex = sets.train->batch(std::span<const int64_t>(idx.data() + cursor, o.batch_size));
    cursor += o.batch_size;
    const double lr = learning_rate(sched, base_lr, step, o.warmup_steps, total);
    window_loss += model.train_step(model_input(ex.input, spec, o), ex.target, lr);
    ++window_steps;
    const bool last = step + 1 == total;
    if ((step + 1) % o.log_every == 0 || last) {
      const double mean = window_loss / window_steps;  // already global
      if (step + 1 == window_steps) s.first_loss = mean;
      s.final_loss = mean;
      const double elapsed = Seconds(std::chrono::steady_clock::now() - start).count();
      const double sps = static_cast<double>((step + 1) * o.batch_size * dp->size()) / elapsed;
      progress.update(step + 1, epoch, mean, sps, elapsed / (step + 1) * (total - step - 1));
      if (metrics.is_open()) {
        nlohmann::json line = {{"step", step + 1},
                               {"epoch", epoch},
                               {"rank", comm->rank()},
                               {"loss", mean},
                               {"loss_all_ranks", mean},
                               {"samples_per_s", sps},
                               {"elapsed_s", elapsed},
                               {"strategy", o.strategy},
                               {"mesh", o.mesh},
                               {"bubble", model.bubble()},
                               {"max_in_flight", model.max_in_flight()}};
        metrics << line.dump() << "\n";
      }
      window_loss = 0;
      window_steps = 0;
    }
    if (o.eval_every > 0 && (step + 1) % o.eval_every == 0 && !last) {
      auto e = evaluate(model, sets.eval(), spec, o);  // collective
      if (out && e.count > 0) {
        *out << fmt::format("eval at step {}: loss {:.4f}, accuracy {:.3f}\n", step + 1,
                            e.loss / e.count, e.correct / e.count);
      }
    }
  }
  progress.done();
  if (trace) write_trace(*trace, o, comm->rank(), out);
  s.steps = total;
  s.samples = total * o.batch_size * dp->size();
  s.wall_seconds = Seconds(std::chrono::steady_clock::now() - start).count();
  s.samples_per_second = static_cast<double>(s.samples) / s.wall_seconds;
  s.mean_step_seconds = total > 0 ? s.wall_seconds / total : 0.0;
  s.workers = comm->size();
  s.state_digest =
      state_digest(model.full_parameters(), torch::OrderedDict<std::string, at::Tensor>());
  const auto e = evaluate(model, sets.eval(), spec, o);
  s.eval_loss = e.count > 0 ? e.loss / e.count : 0.0;
  s.eval_accuracy = e.count > 0 ? e.correct / e.count : 0.0;
  record_memory(s, model.memory());
  if (out) {
    *out << memory_line(s, "its part of " + o.mesh);
    if (model.max_in_flight() > 0) {
      *out << fmt::format(
          "pipeline: at most {} micro-batches in flight on stage 0; bubble {:.3f} "
          "in the last step\n",
          model.max_in_flight(), model.bubble());
    }
    *out << summary_line(s);
  }
  return s;
}

}  // namespace tandem::train
