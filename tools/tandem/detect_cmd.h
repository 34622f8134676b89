// `tandem detect ...`: the detection subcommands, thin over tandem/detect/.
//   make-shapes DIR [--train N --val M --imgsz S --seed K]
//       writes the synthetic shapes data set (tandem/detect/make_shapes.h).
//   train key=value ...
//       trains a detector (tandem/detect/yolo.h), re-launching itself with one
//       rank per device when device= names several.
//   val model=WEIGHTS data=YAML ...      evaluates trained weights.
//   predict model=WEIGHTS source=... ... draws and writes the detections.
#pragma once

namespace CLI {
class App;
}

namespace tandem::tools {

// Adds the `detect` subcommand group; callbacks set `exit_code`.
void add_detect(CLI::App& app, int& exit_code);
// Adds `detect train key=value ...`, `detect val ...` and `detect predict
// ...` under `detect`.
void add_detect_train(CLI::App& detect, int& exit_code);
void add_detect_val(CLI::App& detect, int& exit_code);
void add_detect_predict(CLI::App& detect, int& exit_code);

}  // namespace tandem::tools
