#include "tandem/detect/detect_cli.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <utility>
#include <variant>

#include "tandem/core/check.h"
#include "tandem/detect/run_folder.h"
#include "tandem/detect/train_args.h"
#include "tandem/detect/yolo.h"

namespace tandem::detect {
namespace {

using Target = std::variant<std::string*, int64_t*, double*, bool*>;
using KeyTable = std::vector<std::pair<std::string, Target>>;

// Sets the targets of `keys` from `tokens` (split_key_values' syntax).
void read_keys(const std::vector<std::string>& tokens, const std::string& command,
               const KeyTable& keys) {
  std::vector<std::string> names;
  for (const auto& [name, target] : keys) names.push_back(name);
  for (const auto& [key, value] : split_key_values(tokens, command, names)) {
    for (const auto& [name, target] : keys) {
      if (name == key) std::visit([&](auto* t) { parse_value(key, value, *t); }, target);
    }
  }
}

int train(const std::vector<std::string>& tokens, std::ostream& out) {
  TrainArgs args;
  parse_train_args(tokens, args);
  Yolo model(args.model);
  const TrainResult r = model.train(args, &out);
  if (r.main_process) {
    out << fmt::format("best fitness {:.4f}; weights: {} and {}\n", r.best_fitness, r.last, r.best);
  }
  return 0;
}

int val(const std::vector<std::string>& tokens, std::ostream& out) {
  std::string model, data;
  int64_t imgsz = 640, batch = 16, workers = TrainArgs{}.workers;
  read_keys(tokens, "detect val",
            {{"model", &model},
             {"data", &data},
             {"imgsz", &imgsz},
             {"batch", &batch},
             {"workers", &workers}});
  TANDEM_CHECK(!model.empty() && !data.empty(),
               "detect val: model= (a checkpoint) and data= (a dataset YAML) are required");
  Yolo yolo(model);
  const ValResult r = yolo.val(data, imgsz, batch, workers);
  out << metrics_table(r.metrics, yolo.names(), true)
      << fmt::format("val losses: box {:.4f} cls {:.4f} dfl {:.4f}\n", r.loss[0], r.loss[1],
                     r.loss[2]);
  return 0;
}

int predict(const std::vector<std::string>& tokens, std::ostream& out) {
  std::string model, source, project = "runs/detect", name = "predict";
  bool exist_ok = false;
  PredictOptions o;
  read_keys(tokens, "detect predict",
            {{"model", &model},
             {"source", &source},
             {"imgsz", &o.imgsz},
             {"conf", &o.conf},
             {"iou", &o.iou},
             {"max_det", &o.max_det},
             {"project", &project},
             {"name", &name},
             {"exist_ok", &exist_ok}});
  TANDEM_CHECK(!model.empty() && !source.empty(),
               "detect predict: model= (a checkpoint) and source= (an image or a folder) are "
               "required");
  Yolo yolo(model);
  const auto predictions = yolo.predict(source, o);
  const auto names = yolo.names();
  const std::filesystem::path dir = next_run_dir(project, name, exist_ok);
  std::filesystem::create_directories(dir / "labels");
  int64_t boxes = 0;
  for (const auto& p : predictions) {
    const std::filesystem::path file(p.path);
    save_prediction(p, names, (dir / file.filename()).string(),
                    (dir / "labels" / file.stem()).string() + ".txt");
    boxes += p.boxes.size(0);
  }
  out << fmt::format("{} images, {} boxes; results saved to {}\n", predictions.size(), boxes,
                     dir.string());
  return 0;
}

}  // namespace

const std::vector<std::string>& detect_commands() {
  static const std::vector<std::string> names = {"train", "val", "predict"};
  return names;
}

std::string detect_command_help(const std::string& command) {
  if (command == "train") {
    return "Train a YOLO-style detector, Ultralytics style: key=value pairs (or --key value), "
           "e.g.\n  tandem detect train model=yolo-n data=shapes/shapes.yaml epochs=30 imgsz=160 "
           "batch=16 device=0,1\nWith several devices it re-launches itself with one rank per "
           "device. Keys: " +
           fmt::format("{}", fmt::join(train_arg_keys(), ", "));
  }
  if (command == "val") {
    return "Evaluate trained weights on a data set's val split: model=WEIGHTS.ckpt data=YAML "
           "[imgsz=640 batch=16 workers=8]";
  }
  if (command == "predict") {
    return "Detect objects with trained weights: model=WEIGHTS.ckpt source=IMAGE|DIR [imgsz=640 "
           "conf=0.25 iou=0.7 max_det=300 project=runs/detect name=predict exist_ok=false]; "
           "writes each image with its boxes drawn and labels/<image>.txt (YOLO format plus "
           "confidence)";
  }
  throw InvalidArgument(fmt::format("detect: unknown command '{}'; commands: {}", command,
                                    fmt::join(detect_commands(), ", ")));
}

int run_detect_command(const std::string& command, const std::vector<std::string>& tokens,
                       std::ostream& out) {
  if (command == "train") return train(tokens, out);
  if (command == "val") return val(tokens, out);
  if (command == "predict") return predict(tokens, out);
  detect_command_help(command);  // throws for an unknown command
  return 2;
}

}  // namespace tandem::detect
