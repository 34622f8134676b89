#include "tandem/detect/yolo_trainer.h"

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/tensor.h>
#include <torch/optim/sgd.h>
// clip_grad.h uses torch::Tensor without including torch/types.h.
// clang-format off
#include <torch/types.h>
#include <torch/nn/utils/clip_grad.h>
// clang-format on

#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <optional>

#include "detect/epoch_progress.h"
#include "tandem/core/check.h"
#include "tandem/core/log.h"
#include "tandem/detect/collate.h"
#include "tandem/detect/dataset_config.h"
#include "tandem/detect/detection_dataset.h"
#include "tandem/detect/detection_loader.h"
#include "tandem/detect/detection_loss.h"
#include "tandem/detect/model_ema.h"
#include "tandem/detect/run_folder.h"
#include "tandem/detect/run_plots.h"
#include "tandem/detect/yolo_checkpoint.h"
#include "tandem/detect/yolo_model.h"
#include "tandem/detect/yolo_predictor.h"
#include "tandem/detect/yolo_schedule.h"
#include "tandem/detect/yolo_validator.h"
#include "tandem/launch/gnuplot.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tandem/parallel/sync_batch_norm.h"
#include "tandem/train/checkpoint.h"
#include "tandem/train/data/distributed_sampler.h"

namespace tandem::detect {
namespace {

struct Data {
  std::unique_ptr<DetectionDataset> train, val;
};

DetectionDatasetOptions dataset_options(const TrainArgs& a, bool augment) {
  DetectionDatasetOptions o;
  o.imgsz = a.imgsz;
  o.augment = augment;
  o.aug = AugmentOptions{.hsv_h = a.hsv_h,
                         .hsv_s = a.hsv_s,
                         .hsv_v = a.hsv_v,
                         .translate = a.translate,
                         .scale = a.scale,
                         .flipud = a.flipud,
                         .fliplr = a.fliplr,
                         .mosaic = a.mosaic > 0};
  o.seed = a.seed;
  o.cache = a.cache;
  return o;
}

// Rank 0 scans first (and writes the label caches), then the others read
// them, so that each bad file is reported once.
Data load_data(const TrainArgs& a, Communicator* comm) {
  const DatasetConfig config = load_dataset_config(a.data);
  Data d;
  auto load = [&] {
    d.train = std::make_unique<DetectionDataset>(config, Split::kTrain, dataset_options(a, true));
    d.val = std::make_unique<DetectionDataset>(config, Split::kVal, dataset_options(a, false));
  };
  const bool first = comm == nullptr || comm->rank() == 0;
  if (first) load();
  if (comm != nullptr && comm->size() > 1) comm->barrier();
  if (!first) load();
  return d;
}

YoloModel build_model(const TrainArgs& a, int64_t num_classes, YoloScale scale,
                      const std::shared_ptr<Communicator>& comm, bool sync_bn) {
  YoloOptions o{.scale = scale, .num_classes = num_classes, .reg_max = 16, .norm = {}};
  if (sync_bn) {
    o.norm = [comm](int64_t c) {
      return torch::nn::AnyModule(parallel::SyncBatchNorm(
          parallel::SyncBatchNormOptions{.num_features = c, .eps = 1e-3, .momentum = 0.03}, comm));
    };
  }
  at::manual_seed(a.seed);
  YoloModel m(o);
  if (a.dtype == train::Dtype::kFloat64) m->to(at::kDouble);
  return m;
}

// The scale a run trains: args.model names one, or a checkpoint to start from.
YoloScale scale_of(const TrainArgs& a, std::optional<YoloCheckpoint>& start) {
  if (a.model.ends_with(".ckpt")) {
    start = read_yolo_checkpoint(a.model);
    return start->meta.scale;
  }
  return parse_yolo_scale(a.model);
}

class Loop {
 public:
  Loop(const TrainArgs& args, std::string save_dir, std::shared_ptr<Communicator> comm,
       std::ostream* out)
      : a_(args),
        comm_(std::move(comm)),
        world_(comm_ ? comm_->size() : 1),
        rank_(comm_ ? comm_->rank() : 0),
        out_(rank_ == 0 ? out : nullptr),
        save_dir_(std::move(save_dir)) {}

  TrainResult run(const std::string& resume_from);

 private:
  void setup(const std::string& resume_from);
  void train_epoch(int64_t epoch);
  void end_epoch(int64_t epoch, const std::array<double, 3>& train_loss);
  at::Tensor scaled_loss(const DetectionBatch& batch, std::array<double, 3>& items);
  void save_val_predictions();

  TrainArgs a_;
  std::shared_ptr<Communicator> comm_;
  int world_, rank_;
  std::ostream* out_;
  std::string save_dir_;
  Data data_;
  YoloScale scale_ = YoloScale::kN;
  YoloModel model_{nullptr}, ema_model_{nullptr};
  std::unique_ptr<ModelEma> ema_;
  std::unique_ptr<parallel::DistributedDataParallel> ddp_;
  std::unique_ptr<YoloSchedule> schedule_;
  std::unique_ptr<torch::optim::SGD> optimizer_;
  std::unique_ptr<DetectionLoss> loss_;
  std::unique_ptr<RunFolder> folder_;
  LoaderOptions loader_;
  int64_t batches_ = 0, start_epoch_ = 0, last_opt_step_ = -1;
  double best_fitness_ = -1;
  TrainResult result_;
};

void Loop::setup(const std::string& resume_from) {
  validate(a_);
  TANDEM_CHECK(world_ == world_size_of(a_),
               "detect train: device= names {} devices but the job has {} ranks", world_size_of(a_),
               world_);
  data_ = load_data(a_, comm_.get());
  const int64_t n = data_.train->num_classes();
  std::optional<YoloCheckpoint> start;
  scale_ = scale_of(a_, start);
  if (!resume_from.empty()) start = read_yolo_checkpoint(resume_from);
  model_ = build_model(a_, n, scale_, comm_, a_.sync_bn && world_ > 1);
  ema_model_ = build_model(a_, n, scale_, nullptr, false);
  if (start) {
    TANDEM_CHECK(static_cast<int64_t>(start->meta.names.size()) == n,
                 "detect train: checkpoint '{}' has {} classes but '{}' has {}", start->file.path,
                 start->meta.names.size(), a_.data, n);
    restore_yolo_weights(*start, *model_);
  }
  const int64_t global = a_.batch;
  batches_ = (data_.train->size() + global - 1) / global;
  schedule_ = std::make_unique<YoloSchedule>(a_, batches_);
  optimizer_ = schedule_->make_optimizer(*model_);
  ema_ = std::make_unique<ModelEma>(ema_model_.ptr());
  if (world_ > 1) {
    ddp_ = std::make_unique<parallel::DistributedDataParallel>(model_.ptr(), comm_);
  }
  ema_->copy_from(*model_);
  if (!resume_from.empty()) {
    train::restore_optimizer(start->file, *optimizer_);
    start_epoch_ = start->meta.epochs_done;
    best_fitness_ = start->meta.best_fitness;
    ema_->set_updates(start->meta.ema_updates);
    last_opt_step_ = start_epoch_ * batches_ - 1;
    result_.epochs_done = start_epoch_;
    TANDEM_CHECK(start_epoch_ < a_.epochs,
                 "detect train: '{}' already finished its {} epochs; nothing to resume",
                 resume_from, a_.epochs);
  }
  loader_.workers = loader_workers(a_.workers, world_);
  loss_ = std::make_unique<DetectionLoss>(n, 16, std::vector<double>{8, 16, 32},
                                          LossGains{a_.box, a_.cls, a_.dfl});
  if (rank_ == 0) {
    if (a_.plots) launch::find_gnuplot("detect train: plots=true (plots=false skips the figures)");
    folder_ = std::make_unique<RunFolder>(save_dir_);
    folder_->write_args(to_yaml(a_));
  }
  result_.save_dir = save_dir_;
  for (const auto* d : {data_.train.get(), data_.val.get()}) {
    for (const auto& s : d->report().skipped) result_.skipped.push_back(s);
  }
}

// Each rank's loss with the global batch's normaliser, times world^2: DDP
// averages the ranks' gradients (/ world) and each rank's loss carries its
// own batch's factor (B = global / world) where one process's carries the
// global batch's. See Note [Yolo schedule] for the rest of the recipe.
at::Tensor Loop::scaled_loss(const DetectionBatch& batch, std::array<double, 3>& items) {
  const auto dtype = model_->parameters().front().scalar_type();
  auto raw = model_->forward(batch.images.to(dtype));
  std::function<at::Tensor(const at::Tensor&)> global_sum;
  if (world_ > 1) {
    global_sum = [this](const at::Tensor& s) {
      at::Tensor g = s.detach().clone().contiguous();
      comm_->all_reduce(g);
      return g;
    };
  }
  DetectionLossResult r = (*loss_)(raw, batch.targets, global_sum);
  at::Tensor it = r.items.to(at::kDouble).contiguous();
  if (world_ > 1) comm_->all_reduce(it);
  for (int k = 0; k < 3; ++k) items[k] = it[k].item<double>();
  return r.total * static_cast<double>(world_ * world_);
}

void Loop::train_epoch(int64_t epoch) {
  if (epoch >= a_.epochs - a_.close_mosaic && a_.mosaic > 0) {
    if (epoch == a_.epochs - a_.close_mosaic && out_) *out_ << "Closing dataloader mosaic\n";
    data_.train->set_mosaic(false);
  }
  model_->train();
  const int64_t n = data_.train->size(), global = a_.batch, per_rank = global / world_;
  const std::vector<int64_t> order = train::epoch_order(n, true, a_.seed, epoch);
  std::vector<std::vector<int64_t>> slices(batches_);
  for (int64_t i = 0; i < batches_; ++i) {
    for (int64_t j = 0; j < per_rank; ++j) {
      slices[i].push_back(order[(i * global + rank_ * per_rank + j) % n]);
    }
  }
  DetectionLoader loader(*data_.train, std::move(slices), epoch, loader_);
  detail::EpochProgress progress(out_, epoch, a_.epochs, batches_, a_.imgsz);
  std::array<double, 3> mean{};
  for (int64_t i = 0; i < batches_; ++i) {
    const int64_t ni = i + batches_ * epoch;
    schedule_->apply(*optimizer_, ni, epoch);
    DetectionBatch batch = loader.next();
    const bool step = ni - last_opt_step_ >= schedule_->accumulate(ni);
    std::array<double, 3> items{};
    {
      std::optional<parallel::DistributedDataParallel::NoSyncGuard> no_sync;
      if (ddp_ && !step) no_sync.emplace(*ddp_);
      scaled_loss(batch, items).backward();
    }
    if (step) {
      torch::nn::utils::clip_grad_norm_(model_->parameters(), a_.max_norm);
      optimizer_->step();
      optimizer_->zero_grad();
      ema_->update(*model_);
      last_opt_step_ = ni;
    }
    for (int k = 0; k < 3; ++k) mean[k] = (mean[k] * i + items[k]) / (i + 1);
    for (int k = 0; k < 3; ++k) {
      TANDEM_CHECK(std::isfinite(items[k]),
                   "detect train: the loss became {} at epoch {} batch {}; lower lr0", items[k],
                   epoch + 1, i);
    }
    progress.update(i, mean[0], mean[1], mean[2], batch.targets.size(0));
  }
  progress.done();
  end_epoch(epoch, mean);
}

void Loop::end_epoch(int64_t epoch, const std::array<double, 3>& train_loss) {
  const bool final_epoch = epoch + 1 == a_.epochs;
  ValResult v;
  if (a_.val || final_epoch) {
    v = validate_yolo(*ema_model_, *data_.val, a_.batch / world_, *loss_, comm_, loader_);
    if (out_) *out_ << metrics_table(v.metrics, data_.val->names(), final_epoch);
    result_.metrics = v.metrics;
    result_.fitness = v.fitness;
  }
  const bool best = v.fitness >= best_fitness_;
  best_fitness_ = std::max(best_fitness_, v.fitness);
  result_.best_fitness = best_fitness_;
  result_.epochs_done = epoch + 1;
  result_.last = checkpoint_path(save_dir_, "last");
  result_.best = checkpoint_path(save_dir_, "best");
  if (rank_ != 0) return;
  std::vector<double> row = {static_cast<double>(epoch + 1),
                             train_loss[0],
                             train_loss[1],
                             train_loss[2],
                             v.metrics.precision,
                             v.metrics.recall,
                             v.metrics.map50,
                             v.metrics.map50_95,
                             v.loss[0],
                             v.loss[1],
                             v.loss[2]};
  for (const auto& g : optimizer_->param_groups()) {
    row.push_back(static_cast<const torch::optim::SGDOptions&>(g.options()).lr());
  }
  folder_->append_results(row);
  YoloCheckpointMeta meta{.scale = scale_,
                          .names = data_.train->names(),
                          .epochs_done = epoch + 1,
                          .best_fitness = best_fitness_,
                          .ema_updates = ema_->updates(),
                          .args_yaml = to_yaml(a_)};
  write_yolo_checkpoint(result_.last, *ema_model_, optimizer_.get(), meta);
  if (best) write_yolo_checkpoint(result_.best, *ema_model_, optimizer_.get(), meta);
  if (a_.save_period > 0 && (epoch + 1) % a_.save_period == 0) {
    write_yolo_checkpoint(checkpoint_path(save_dir_, fmt::format("epoch{}", epoch + 1)),
                          *ema_model_, optimizer_.get(), meta);
  }
  if (final_epoch && a_.plots) {
    plot_results(save_dir_);
    plot_pr_curve(save_dir_, *v.statistics, data_.val->names());
    plot_confusion_matrix(save_dir_, v.confusion, data_.val->names());
    save_val_predictions();
  }
}

// val_batch0_pred.jpg: the EMA model's detections on the first 16 val images.
void Loop::save_val_predictions() {
  std::vector<std::string> paths;
  for (int64_t i = 0; i < std::min<int64_t>(16, data_.val->size()); ++i) {
    paths.push_back(data_.val->records()[i].image);
  }
  PredictOptions o;
  o.imgsz = a_.imgsz;
  save_prediction_grid(predict_images(*ema_model_, paths, o), data_.val->names(),
                       (std::filesystem::path(save_dir_) / "val_batch0_pred.jpg").string(),
                       static_cast<int>(std::max<int64_t>(a_.imgsz, 160)));
}

TrainResult Loop::run(const std::string& resume_from) {
  setup(resume_from);
  if (out_) {
    *out_ << fmt::format(
        "detect train: {} on {} ({} train / {} val images, {} classes), {} epochs, batch {} over "
        "{} rank(s), {} batches/epoch; results to {}\n",
        yolo_scale_name(scale_), a_.data, data_.train->size(), data_.val->size(),
        data_.train->num_classes(), a_.epochs, a_.batch, world_, batches_, save_dir_);
    if (start_epoch_ > 0) *out_ << fmt::format("Resuming from epoch {}\n", start_epoch_ + 1);
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t epoch = start_epoch_; epoch < a_.epochs; ++epoch) train_epoch(epoch);
  if (out_) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    *out_ << fmt::format("{} epochs completed in {:.3f} hours. Results saved to {}\n",
                         a_.epochs - start_epoch_, s / 3600, save_dir_);
    if (!result_.skipped.empty()) {
      *out_ << fmt::format("{} file(s) skipped:\n", result_.skipped.size());
      for (const auto& [path, why] : result_.skipped) *out_ << "  " << path << ": " << why << "\n";
    }
  }
  return result_;
}

}  // namespace

TrainResult train_yolo(const TrainArgs& args, const std::string& save_dir,
                       const std::shared_ptr<Communicator>& comm, std::ostream* out,
                       const std::string& resume_from) {
  Loop loop(args, save_dir, comm, out);
  return loop.run(resume_from);
}

}  // namespace tandem::detect
