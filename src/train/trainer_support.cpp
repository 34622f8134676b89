#include "train/trainer_support.h"

#include <ATen/ops/argmax.h>
#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/functional/loss.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "tandem/core/check.h"
#include "tandem/train/checkpoint_file.h"
#include "tandem/train/data/make_dataset.h"

namespace tandem::train {

Datasets make_datasets(const TrainerOptions& o, const ModelInput& spec) {
  DatasetOptions dopts;
  dopts.format = o.data.format;
  dopts.synthetic_size = o.data.synthetic_size;
  dopts.noise = o.data.noise;
  dopts.seed = o.run.seed;
  if (spec.dtype == at::kLong) {
    dopts.context = spec.sample_shape.at(0);
    dopts.vocab_size = spec.token_range;
  }
  Datasets sets;
  sets.train = make_dataset(o.data.source, dopts);
  dopts.split = DataSplit::kTest;
  try {
    sets.test = make_dataset(o.data.source, dopts);
  } catch (const InvalidArgument&) {
    sets.test = nullptr;  // a path without a test split: evaluate on training data
  }
  return sets;
}

MetricsFile::MetricsFile(const std::string& pattern, int rank) {
  if (pattern.empty()) return;
  std::string path = pattern;
  if (auto pos = path.find("{rank}"); pos != std::string::npos) {
    path.replace(pos, 6, std::to_string(rank));
  }
  out_.open(path, std::ios::app);
  TANDEM_CHECK(out_.good(), "--metrics: cannot write '{}'", path);
}

void MetricsFile::write(const nlohmann::json& line) {
  if (!out_.is_open()) return;
  out_ << line.dump() << '\n' << std::flush;
}

std::shared_ptr<TraceRecorder> open_trace(const TrainerOptions& o, int rank) {
  const std::string& dir = o.observe.trace_dir;
  if (dir.empty()) return nullptr;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  TANDEM_CHECK(!ec, "--trace-dir: cannot create '{}' ({})", dir, ec.message());
  return std::make_shared<TraceRecorder>(rank);
}

void write_trace(const TraceRecorder& trace, const TrainerOptions& o, int rank, std::ostream* out) {
  const auto path = std::filesystem::path(o.observe.trace_dir) / fmt::format("rank-{}.json", rank);
  trace.write(path.string());
  if (out) *out << fmt::format("trace: {} (one file per rank; open in Perfetto)\n", path.string());
}

// The batch as the model wants it: the model's sample shape, its dtype.
at::Tensor model_input(const at::Tensor& input, const ModelInput& spec, const TrainerOptions& o) {
  int64_t want = 1;
  for (int64_t d : spec.sample_shape) want *= d;
  const int64_t have = input.numel() / std::max<int64_t>(input.size(0), 1);
  TANDEM_CHECK(have == want,
               "--model {} takes samples of shape [{}] but --data {} gives [{}]; pick matching "
               "data (e.g. synthetic-cifar for resnet18, synthetic-tokens for gpt-mini)",
               name_of(o.model.kind), fmt::join(spec.sample_shape, ", "), o.data.source,
               fmt::join(input.sizes().slice(1), ", "));
  auto shape = spec.input_shape(input.size(0));
  const bool real = at::isFloatingType(spec.dtype);
  const bool float64 = o.model.dtype == Dtype::kFloat64;
  return input.reshape(shape).to(real && float64 ? at::kDouble : spec.dtype);
}

EpochCursor::EpochCursor(const SamplerOptions& options, int64_t batch)
    : options_(options), sampler_(options), batch_(batch) {}

void EpochCursor::resume_at(int64_t epoch, int64_t samples_in_epoch, const std::string& path) {
  if (samples_in_epoch > sampler_.size()) {
    throw_checkpoint_error(
        path, "samples_in_epoch",
        fmt::format("{} samples of the epoch were consumed but this rank's epoch now has only "
                    "{}; did the data set change?",
                    samples_in_epoch, sampler_.size()));
  }
  options_.epoch = epoch;
  options_.start_offset = samples_in_epoch;
  sampler_ = DistributedSampler(options_);
  epoch_ = epoch;
  indices_ = sampler_.indices();
  cursor_ = 0;
}

std::span<const int64_t> EpochCursor::next() {
  if (cursor_ + static_cast<size_t>(batch_) > indices_.size()) {
    sampler_.set_epoch(++epoch_);
    indices_ = sampler_.indices();
    cursor_ = 0;
  }
  std::span<const int64_t> batch(indices_.data() + cursor_, static_cast<size_t>(batch_));
  cursor_ += static_cast<size_t>(batch_);
  return batch;
}

int64_t EpochCursor::samples_in_epoch() const {
  return sampler_.start_offset() + static_cast<int64_t>(cursor_);
}

Progress::Progress(std::ostream* out, int64_t total) : out_(out), total_(total) {
  tty_ = out_ != nullptr && isatty(STDOUT_FILENO);
}

void Progress::update(int64_t step, int64_t epoch, double loss, double samples_per_s,
                      double eta_s) {
  if (out_ == nullptr) return;
  const int width = 30;
  int filled = static_cast<int>(width * step / std::max<int64_t>(total_, 1));
  std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
  std::string text =
      fmt::format("epoch {} step {}/{} [{}] loss {:.4f} | {:.0f} samples/s | ETA {:.0f} s", epoch,
                  step, total_, bar, loss, samples_per_s, eta_s);
  if (tty_) {
    *out_ << "\r" << text << std::flush;
  } else {
    *out_ << text << "\n" << std::flush;
  }
}

void Progress::done() {
  if (out_ != nullptr && tty_) *out_ << "\n";
}

int64_t total_steps(const TrainerOptions& o, int64_t shard_size) {
  const int64_t per_epoch = shard_size / o.run.batch_size;
  TANDEM_CHECK(per_epoch >= 1,
               "--batch-size {} is larger than this rank's {} samples per epoch; use a smaller "
               "batch or more data (--dataset-size)",
               o.run.batch_size, shard_size);
  return o.run.steps > 0 ? o.run.steps : o.run.epochs * per_epoch;
}

std::vector<double> average_over_ranks(Communicator& comm, std::vector<double> values) {
  at::Tensor t = at::tensor(values, at::kDouble);
  comm.all_reduce(t, ReduceOp::kAvg);
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

void record_memory(TrainSummary& s, const memory::MemoryAccounting& memory) {
  s.parameter_bytes = memory.now().parameters;
  s.gradient_bytes = memory.now().gradients;
  s.optimizer_bytes = memory.now().optimizer_state;
  s.peak_model_state_bytes = memory.peak_total();
  s.peak_activation_bytes = memory.peak_activations();
  s.peak_bytes_with_activations = memory.peak_with_activations();
}

std::unique_ptr<memory::ActivationTracker> track_activations(const TrainerOptions& o) {
  return o.observe.track_activations ? std::make_unique<memory::ActivationTracker>() : nullptr;
}

std::string memory_line(const TrainSummary& s, const std::string& what) {
  constexpr double kMiB = 1024.0 * 1024.0;
  std::string line = fmt::format(
      "model state on rank 0 ({}): parameters {:.2f} MiB, gradients {:.2f} MiB, optimizer "
      "{:.2f} MiB; peak {:.2f} MiB",
      what, s.parameter_bytes / kMiB, s.gradient_bytes / kMiB, s.optimizer_bytes / kMiB,
      s.peak_model_state_bytes / kMiB);
  if (s.peak_activation_bytes > 0) {  // tracked (--track-activations)
    line += fmt::format("; activations peak {:.2f} MiB, with the model state {:.2f} MiB",
                        s.peak_activation_bytes / kMiB, s.peak_bytes_with_activations / kMiB);
  }
  return line + "\n";
}

std::string summary_line(const TrainSummary& s) {
  return fmt::format(
      "summary: {} steps, {} samples in {:.1f} s ({:.0f} samples/s); train loss {:.4f} -> "
      "{:.4f}; eval loss {:.4f}, accuracy {:.3f}\n",
      s.steps, s.samples, s.wall_seconds, s.samples_per_second, s.first_loss, s.final_loss,
      s.eval_loss, s.eval_accuracy);
}

}  // namespace tandem::train
