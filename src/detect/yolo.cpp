#include "tandem/detect/yolo.h"

#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>

#include "tandem/comm/rendezvous.h"
#include "tandem/core/check.h"
#include "tandem/core/env.h"
#include "tandem/detect/dataset_config.h"
#include "tandem/detect/detection_dataset.h"
#include "tandem/detect/detection_loader.h"
#include "tandem/detect/detection_loss.h"
#include "tandem/detect/run_folder.h"
#include "tandem/detect/yolo_checkpoint.h"
#include "tandem/launch/launcher.h"

namespace tandem::detect {
namespace {

// What the launching process hands its ranks (See Note [Re-launch]).
constexpr const char* kSaveDirVar = "TANDEM_DETECT_SAVE_DIR";
constexpr const char* kResumeVar = "TANDEM_DETECT_RESUME";

std::vector<std::string> own_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> argv;
  std::string arg;
  while (std::getline(in, arg, '\0')) argv.push_back(arg);
  TANDEM_CHECK(!argv.empty(), "Yolo::train: cannot read /proc/self/cmdline to re-launch");
  argv[0] = std::filesystem::read_symlink("/proc/self/exe").string();
  return argv;
}

void write_fd(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// The run folder of a rank: the launcher's choice, else rank 0's, broadcast.
std::string shared_save_dir(const std::string& mine, Communicator* comm) {
  if (auto given = env::get(env::process_lookup(), kSaveDirVar)) return *given;
  if (comm == nullptr || comm->size() == 1) return mine;
  constexpr int64_t kMax = 4096;
  TANDEM_CHECK(static_cast<int64_t>(mine.size()) < kMax, "detect train: run folder path too long");
  at::Tensor bytes = at::zeros({kMax}, at::kByte);
  std::copy(mine.begin(), mine.end(), bytes.data_ptr<uint8_t>());
  comm->broadcast(bytes, 0);
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()));
}

// Reads results.csv and the last checkpoint of a run the ranks finished.
TrainResult result_from_folder(const std::string& dir) {
  TrainResult r;
  r.save_dir = dir;
  r.last = checkpoint_path(dir, "last");
  r.best = checkpoint_path(dir, "best");
  const auto rows = RunFolder(dir).read_results();
  if (!rows.empty() && rows.back().size() >= 8) {
    const auto& row = rows.back();
    r.epochs_done = static_cast<int64_t>(row[0]);
    r.metrics.precision = row[4];
    r.metrics.recall = row[5];
    r.metrics.map50 = row[6];
    r.metrics.map50_95 = row[7];
    r.fitness = 0.1 * row[6] + 0.9 * row[7];
  }
  if (std::filesystem::exists(r.last))
    r.best_fitness = read_yolo_checkpoint(r.last).meta.best_fitness;
  return r;
}

}  // namespace

Yolo::Yolo(std::string model) : model_(std::move(model)) {
  if (!model_.ends_with(".ckpt")) parse_yolo_scale(model_);
}

TrainResult Yolo::train(TrainArgs args, std::ostream* out) {
  args.model = model_;
  const auto lookup = env::process_lookup();
  std::string resume_from = env::get(lookup, kResumeVar).value_or("");
  if (resume_from.empty() && !args.resume.empty()) {
    resume_from = args.resume == "true" || args.resume == "True"
                      ? newest_last_checkpoint(args.project)
                      : args.resume;
  }
  std::string save_dir;
  if (!resume_from.empty()) {
    // The run's own settings, except where it runs (as Ultralytics resumes).
    const YoloCheckpoint ckpt = read_yolo_checkpoint(resume_from);
    TrainArgs resumed;
    parse_train_args_yaml(ckpt.meta.args_yaml, resumed);
    if (!args.device.empty()) resumed.device = args.device;
    resumed.resume = resume_from;
    args = resumed;
    save_dir = run_dir_of_checkpoint(resume_from);
  } else {
    save_dir = next_run_dir(args.project, args.name, args.exist_ok);
  }
  validate(args);
  const RendezvousInfo info = read_rendezvous_env(lookup);
  const int world = world_size_of(args);
  if (world > 1 && info.source == "single") {
    load_dataset_config(args.data);  // a bad YAML fails here, once, not in every rank
    launch::LaunchOptions o;
    o.nproc_per_node = world;
    o.prefix_output = false;
    o.command = own_command_line();
    const std::string threads = std::to_string(std::max(1, usable_cores() / world));
    o.env = {std::string(kSaveDirVar) + "=" + save_dir, "OMP_NUM_THREADS=" + threads,
             "OPENBLAS_NUM_THREADS=" + threads};
    if (!resume_from.empty()) o.env.push_back(std::string(kResumeVar) + "=" + resume_from);
    launch::LaunchOutput output{
        .out = [](std::string_view s) { write_fd(STDOUT_FILENO, s); },
        .err = [](std::string_view s) { write_fd(STDERR_FILENO, s); },
        .status = [](std::string_view s) { write_fd(STDERR_FILENO, s); },
    };
    const launch::LaunchResult r = launch::run(o, output);
    if (r.exit_code != 0) {
      throw Error(
          fmt::format("detect train: the {} ranks did not all finish (exit code {}); "
                      "their output above names the cause",
                      world, r.exit_code));
    }
    model_ = checkpoint_path(save_dir, "best");
    return result_from_folder(save_dir);
  }
  std::shared_ptr<Communicator> comm;
  if (info.source != "single") comm = init(info);
  at::set_num_threads(std::max(1, usable_cores() / std::max(1, info.local_world_size)));
  save_dir = shared_save_dir(save_dir, comm.get());
  const bool rank0 = comm == nullptr || comm->rank() == 0;
  TrainResult r = train_yolo(args, save_dir, comm, rank0 ? out : nullptr, resume_from);
  r.main_process = !env::get(lookup, kSaveDirVar).has_value();
  model_ = r.best;
  return r;
}

namespace {

YoloCheckpoint trained(const std::string& model) {
  TANDEM_CHECK(model.ends_with(".ckpt"),
               "Yolo('{}') holds no trained weights; train it first, or construct it from a "
               "checkpoint such as runs/detect/train/weights/best.ckpt",
               model);
  return read_yolo_checkpoint(model);
}

}  // namespace

ValResult Yolo::val(const std::string& data, int64_t imgsz, int64_t batch, int64_t workers) const {
  const YoloCheckpoint ckpt = trained(model_);
  YoloModel m = load_yolo_model(ckpt);
  DetectionDatasetOptions o;
  o.imgsz = imgsz;
  DetectionDataset set(load_dataset_config(data), Split::kVal, o);
  TANDEM_CHECK(set.num_classes() == static_cast<int64_t>(ckpt.meta.names.size()),
               "detect val: '{}' has {} classes but '{}' was trained on {}", data,
               set.num_classes(), model_, ckpt.meta.names.size());
  LoaderOptions loader;
  loader.workers = loader_workers(workers, 1);
  return validate_yolo(*m, set, batch, DetectionLoss(set.num_classes()), nullptr, loader);
}

std::vector<Prediction> Yolo::predict(const std::string& source,
                                      const PredictOptions& options) const {
  YoloModel m = load_yolo_model(trained(model_));
  return predict_images(*m, list_sources(source), options);
}

std::vector<std::string> Yolo::names() const { return trained(model_).meta.names; }

}  // namespace tandem::detect
