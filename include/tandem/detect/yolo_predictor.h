// Prediction with a trained detector: images letterboxed as validation does
// them, the model, NMS, and the boxes mapped back to each file's pixels;
// and the outputs of `tandem detect predict`: the image with its boxes and
// labels drawn, and a YOLO-format .txt per image (class x_center y_center
// width height confidence, normalised to the image).
// Not thread-safe (the model is a torch module). Nothing is collective.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/detect/yolo_model.h"

namespace tandem::detect {

struct PredictOptions {
  int64_t imgsz = 640;    // letterbox side, a multiple of 32
  double conf = 0.25;     // confidence threshold
  double iou = 0.7;       // NMS IoU threshold
  int64_t max_det = 300;  // boxes kept per image
};

struct Prediction {
  std::string path;
  int64_t width = 0, height = 0;  // of the file, in pixels
  at::Tensor boxes;               // float32 [n, 6]: x1, y1, x2, y2 (file pixels), confidence, class
};

// The images a `source` names: the file itself, or every image under a
// folder (sorted). Throws tandem::InvalidArgument when it names none.
std::vector<std::string> list_sources(const std::string& source);

// Predicts every image of `paths` (one at a time). Throws
// tandem::InvalidArgument naming a file that cannot be decoded, or for bad
// options.
std::vector<Prediction> predict_images(YoloModelImpl& model, const std::vector<std::string>& paths,
                                       const PredictOptions& options);

// Writes `p`'s image with its boxes and "name confidence" labels drawn to
// `image_out` (JPEG/PNG by extension), and its boxes to `txt_out` in YOLO
// format. Throws tandem::Error naming a file that cannot be written.
void save_prediction(const Prediction& p, const std::vector<std::string>& names,
                     const std::string& image_out, const std::string& txt_out);

// Draws up to the first few predictions as one grid image (each letterboxed
// into tile x tile pixels), e.g. a run's val_batch0_pred.jpg. Throws
// tandem::InvalidArgument for no predictions or tile < 1, tandem::Error
// when the file cannot be written.
void save_prediction_grid(const std::vector<Prediction>& predictions,
                          const std::vector<std::string>& names, const std::string& image_out,
                          int tile);

}  // namespace tandem::detect
