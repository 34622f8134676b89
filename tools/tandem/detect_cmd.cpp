#include "detect_cmd.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <string>

#include "tandem/detect/detect_cli.h"
#include "tandem/detect/make_shapes.h"

namespace tandem::tools {

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
  add_detect_commands(*cmd, exit_code);
}

void add_detect_commands(CLI::App& detect, int& exit_code) {
  for (const std::string& name : detect::detect_commands()) {
    auto* cmd = detect.add_subcommand(name, detect::detect_command_help(name));
    cmd->allow_extras();
    cmd->callback([cmd, name, &exit_code] {
      exit_code = detect::run_detect_command(name, cmd->remaining(), std::cout);
    });
  }
}

}  // namespace tandem::tools
