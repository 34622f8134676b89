#include "detect_cmd.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <type_traits>

#include "tandem/core/error.h"
#include "tandem/detect/make_shapes.h"
#include "tandem/detect/run_folder.h"
#include "tandem/detect/yolo.h"

namespace tandem::tools {
namespace {

// `value` as a T (int64_t or double), or InvalidArgument naming `key`.
template <typename T>
T number(const std::string& key, const std::string& value) {
  T out{};
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
    throw InvalidArgument(fmt::format("{}={} is not {}", key, value,
                                      std::is_integral_v<T> ? "a whole number" : "a number"));
  }
  return out;
}

}  // namespace

void add_detect(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("detect", "Object detection (YOLO-style)");
  cmd->require_subcommand(1);
  auto* shapes = cmd->add_subcommand(
      "make-shapes",
      "Write a synthetic detection data set (circles, squares, triangles, crosses) in the "
      "Ultralytics layout: DIR/images, DIR/labels and DIR/shapes.yaml");
  auto options = std::make_shared<detect::MakeShapesOptions>();
  shapes->add_option("DIR", options->dir, "the folder to write (created when missing)")->required();
  shapes->add_option("--train", options->train, "training images")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  shapes->add_option("--val", options->val, "validation images")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  shapes->add_option("--imgsz", options->imgsz, "image side in pixels")
      ->capture_default_str()
      ->check(CLI::Range(64, 4096));
  shapes->add_option("--seed", options->seed, "random seed; the same seed writes the same files")
      ->capture_default_str();
  shapes->callback([options, &exit_code] {
    const detect::MakeShapesResult r = detect::make_shapes(*options);
    std::cout << fmt::format("wrote {} images ({} objects); data set: {}\n", r.images, r.objects,
                             r.yaml_path);
    exit_code = 0;
  });
  add_detect_train(*cmd, exit_code);
  add_detect_val(*cmd, exit_code);
  add_detect_predict(*cmd, exit_code);
}

void add_detect_train(CLI::App& detect, int& exit_code) {
  auto* train = detect.add_subcommand(
      "train",
      "Train a YOLO-style detector, Ultralytics style: key=value pairs (or --key value), e.g.\n"
      "  tandem detect train model=yolo-n data=shapes/shapes.yaml epochs=30 imgsz=160 batch=16 "
      "device=0,1\nWith several devices it re-launches itself with one rank per device. Keys: " +
          fmt::format("{}", fmt::join(detect::train_arg_keys(), ", ")));
  train->allow_extras();
  train->callback([train, &exit_code] {
    detect::TrainArgs args;
    detect::parse_train_args(train->remaining(), args);
    detect::Yolo model(args.model);
    const detect::TrainResult r = model.train(args, &std::cout);
    if (r.main_process) {
      std::cout << fmt::format("best fitness {:.4f}; weights: {} and {}\n", r.best_fitness, r.last,
                               r.best);
    }
    exit_code = 0;
  });
}

void add_detect_val(CLI::App& detect, int& exit_code) {
  auto* val = detect.add_subcommand(
      "val",
      "Evaluate trained weights on a data set's val split: model=WEIGHTS.ckpt data=YAML "
      "[imgsz=640 batch=16]");
  val->allow_extras();
  val->callback([val, &exit_code] {
    std::string model, data;
    int64_t imgsz = 640, batch = 16;
    for (const auto& [k, v] : detect::split_key_values(val->remaining(), "detect val",
                                                       {"model", "data", "imgsz", "batch"})) {
      if (k == "model") model = v;
      if (k == "data") data = v;
      if (k == "imgsz") imgsz = number<int64_t>(k, v);
      if (k == "batch") batch = number<int64_t>(k, v);
    }
    if (model.empty() || data.empty()) {
      throw InvalidArgument(
          "detect val: model= (a checkpoint) and data= (a dataset YAML) are "
          "required");
    }
    detect::Yolo yolo(model);
    const detect::ValResult r = yolo.val(data, imgsz, batch);
    std::cout << detect::metrics_table(r.metrics, yolo.names(), true)
              << fmt::format("val losses: box {:.4f} cls {:.4f} dfl {:.4f}\n", r.loss[0], r.loss[1],
                             r.loss[2]);
    exit_code = 0;
  });
}

void add_detect_predict(CLI::App& detect, int& exit_code) {
  auto* predict = detect.add_subcommand(
      "predict",
      "Detect objects with trained weights: model=WEIGHTS.ckpt source=IMAGE|DIR [imgsz=640 "
      "conf=0.25 iou=0.7 max_det=300 project=runs/detect name=predict exist_ok=false]; writes "
      "each image with its boxes drawn and labels/<image>.txt (YOLO format plus confidence)");
  predict->allow_extras();
  predict->callback([predict, &exit_code] {
    std::string model, source, project = "runs/detect", name = "predict";
    bool exist_ok = false;
    detect::PredictOptions o;
    for (const auto& [k, v] :
         detect::split_key_values(predict->remaining(), "detect predict",
                                  {"model", "source", "imgsz", "conf", "iou", "max_det", "project",
                                   "name", "exist_ok"})) {
      if (k == "model") model = v;
      if (k == "source") source = v;
      if (k == "imgsz") o.imgsz = number<int64_t>(k, v);
      if (k == "conf") o.conf = number<double>(k, v);
      if (k == "iou") o.iou = number<double>(k, v);
      if (k == "max_det") o.max_det = number<int64_t>(k, v);
      if (k == "project") project = v;
      if (k == "name") name = v;
      if (k == "exist_ok") exist_ok = v == "true" || v == "True" || v == "1";
    }
    if (model.empty() || source.empty()) {
      throw InvalidArgument(
          "detect predict: model= (a checkpoint) and source= (an image or a "
          "folder) are required");
    }
    detect::Yolo yolo(model);
    const auto predictions = yolo.predict(source, o);
    const auto names = yolo.names();
    const std::filesystem::path dir = detect::next_run_dir(project, name, exist_ok);
    std::filesystem::create_directories(dir / "labels");
    int64_t boxes = 0;
    for (const auto& p : predictions) {
      const std::filesystem::path file(p.path);
      detect::save_prediction(p, names, (dir / file.filename()).string(),
                              (dir / "labels" / file.stem()).string() + ".txt");
      boxes += p.boxes.size(0);
    }
    std::cout << fmt::format("{} images, {} boxes; results saved to {}\n", predictions.size(),
                             boxes, dir.string());
    exit_code = 0;
  });
}

}  // namespace tandem::tools
