// `tandem detect ...`: the detection subcommands, thin over tandem/detect/.
//   make-shapes DIR [--train N --val M --imgsz S --seed K]
//       writes the synthetic shapes data set (tandem/detect/make_shapes.h).
//   train|val|predict key=value ...
//       tandem/detect/detect_cli.h runs them.
#pragma once

namespace CLI {
class App;
}

namespace tandem::tools {

// Adds the `detect` subcommand group; callbacks set `exit_code`.
void add_detect(CLI::App& app, int& exit_code);
// Adds `train`, `val` and `predict` (key=value tokens) under `detect`.
void add_detect_commands(CLI::App& detect, int& exit_code);

}  // namespace tandem::tools
