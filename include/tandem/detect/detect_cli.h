// The `key=value` commands of detection, as `tandem detect train|val|predict`
// runs them: the tokens after the command name in, a report on `out` and an
// exit code back, so that the tool is a thin main (STYLE.md, "Thin tools").
//   train   key=value ... (train_args.h): Yolo::train; with several devices
//           the process re-launches itself (See Note [Re-launch] in yolo.h).
//   val     model=WEIGHTS.ckpt data=YAML [imgsz batch workers]: the table and
//           the losses of Yolo::val.
//   predict model=WEIGHTS.ckpt source=IMAGE|DIR [imgsz conf iou max_det
//           project name exist_ok]: each image with its boxes drawn and
//           labels/<image>.txt (class x y w h confidence) in a new run folder.
// Keys are also accepted as `--key value` and `--key=value`.
// Not thread-safe (train installs signal handlers while it launches ranks).
// train is collective when the process is a rank of a job.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tandem::detect {

// The commands run_detect_command knows, in help order.
const std::vector<std::string>& detect_commands();

// One paragraph of help for `command`, listing its keys. Throws
// tandem::InvalidArgument for an unknown command.
std::string detect_command_help(const std::string& command);

// Runs `command` with `tokens` and returns its exit code (0). Throws
// tandem::InvalidArgument for an unknown command or key, a bad value or a
// missing required key (the tool exits 2), and tandem::Error when the work
// fails (exit 1).
int run_detect_command(const std::string& command, const std::vector<std::string>& tokens,
                       std::ostream& out);

}  // namespace tandem::detect
