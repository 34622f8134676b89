// Yolo: the one-line entry point of detection, as Ultralytics' YOLO class:
//
//   tandem::detect::Yolo model("yolo-n");
//   TrainArgs args;
//   args.data = "shapes/shapes.yaml";
//   args.epochs = 30;
//   args.imgsz = 160;
//   args.device = {0, 1};
//   TrainResult r = model.train(args);
//   auto found = model.predict("img.jpg");  // the best weights of that run
//
// Note [Re-launch]
// With more than one device and no launcher around the process (no RANK /
// WORLD_SIZE in the environment), train() starts one rank per device
// through the launcher library (the code behind tandem-run) on a free port:
// every rank re-executes this program (/proc/self/exe) with the same
// arguments (/proc/self/cmdline) and the rank variables, so the program must
// reach the same train() call again when re-run with the same argv and
// environment, and everything it does before train() runs once per rank
// too. In a rank, train() trains (collectively) and returns; the program
// then goes on in every rank, so work meant to happen once after training
// belongs in the launching process: train() there returns after every rank
// has exited, with the result read back from the run folder. Each rank gets
// hardware threads / ranks intra-op threads. Under tandem-run (RANK set),
// train() joins the job instead of launching.
// Not thread-safe; train() installs signal handlers while it launches ranks
// (launch::run).
#pragma once

#include <iostream>
#include <string>

#include "tandem/detect/train_args.h"
#include "tandem/detect/yolo_predictor.h"
#include "tandem/detect/yolo_trainer.h"
#include "tandem/detect/yolo_validator.h"

namespace tandem::detect {

class Yolo {
 public:
  // `model`: a scale ("yolo-n", "n", "yolov8s", ...) or a checkpoint written
  // by training (weights/last.ckpt or best.ckpt) to start from. Throws
  // tandem::InvalidArgument for an unknown scale.
  explicit Yolo(std::string model = "yolo-n");

  // Trains with `args` (args.model is replaced by this object's model) and
  // writes the run folder (run_folder.h). Collective when run as a rank of a
  // job. `out` gets rank 0's progress (std::clog by default; null: silent).
  // Throws tandem::InvalidArgument for bad args, and tandem::Error when a
  // launched rank fails (its output names the cause).
  // Afterwards this object's model is the run's weights/best.ckpt.
  TrainResult train(TrainArgs args, std::ostream* out = &std::clog);

  // Evaluates the trained weights on the val split of the dataset YAML
  // `data`, in this process, with `workers` loader threads (capped at the
  // cores; see detection_loader.h). Throws tandem::InvalidArgument when this object
  // holds no checkpoint (a bare scale) or for bad data, CheckpointError for
  // a damaged checkpoint.
  ValResult val(const std::string& data, int64_t imgsz = 640, int64_t batch = 16,
                int64_t workers = 8) const;

  // Detects objects in `source` (an image, or a folder of images) with the
  // trained weights; boxes are in each file's pixels. Throws as val().
  std::vector<Prediction> predict(const std::string& source,
                                  const PredictOptions& options = {}) const;

  // The class names of the trained weights (as val()).
  std::vector<std::string> names() const;

  const std::string& model() const { return model_; }

 private:
  std::string model_;
};

}  // namespace tandem::detect
