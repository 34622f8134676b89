#include "tandem/detect/yolo_checkpoint.h"

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <sstream>

#include "tandem/train/checkpoint.h"

namespace tandem::detect {
namespace {

std::string join_lines(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += n + "\n";
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

const std::string& meta_field(const train::Checkpoint& c, const std::string& key) {
  auto it = c.meta.find(key);
  if (it == c.meta.end()) {
    train::throw_checkpoint_error(c.path, "meta." + key,
                                  "missing; is this a detection checkpoint (weights/last.ckpt)?");
  }
  return it->second;
}

}  // namespace

void write_yolo_checkpoint(const std::string& path, const torch::nn::Module& model,
                           torch::optim::Optimizer* optimizer, const YoloCheckpointMeta& meta) {
  train::Checkpoint c;
  train::capture_module(model, c);
  if (optimizer != nullptr) train::capture_optimizer(*optimizer, c);
  c.step = meta.ema_updates;
  c.epoch = meta.epochs_done;
  c.meta["kind"] = "tandem-detect";
  c.meta["scale"] = yolo_scale_name(meta.scale);
  c.meta["names"] = join_lines(meta.names);
  c.meta["epochs_done"] = std::to_string(meta.epochs_done);
  c.meta["best_fitness"] = fmt::format("{:.17g}", meta.best_fitness);
  c.meta["ema_updates"] = std::to_string(meta.ema_updates);
  c.meta["args"] = meta.args_yaml;
  train::write_checkpoint_file(path, c);
}

YoloCheckpoint read_yolo_checkpoint(const std::string& path) {
  YoloCheckpoint out;
  out.file = train::read_checkpoint(path);
  const auto& c = out.file;
  if (meta_field(c, "kind") != "tandem-detect") {
    train::throw_checkpoint_error(
        path, "meta.kind",
        fmt::format("is '{}', not a detection checkpoint", meta_field(c, "kind")));
  }
  try {
    out.meta.scale = parse_yolo_scale(meta_field(c, "scale"));
    out.meta.names = split_lines(meta_field(c, "names"));
    out.meta.epochs_done = std::stoll(meta_field(c, "epochs_done"));
    out.meta.best_fitness = std::stod(meta_field(c, "best_fitness"));
    out.meta.ema_updates = std::stoll(meta_field(c, "ema_updates"));
  } catch (const std::logic_error& e) {  // stoll/stod
    train::throw_checkpoint_error(path, "meta", fmt::format("unreadable: {}", e.what()));
  }
  out.meta.args_yaml = meta_field(c, "args");
  return out;
}

void restore_yolo_weights(const YoloCheckpoint& ckpt, torch::nn::Module& model) {
  train::Checkpoint c;
  c.path = ckpt.file.path;
  const auto params = model.named_parameters(true);
  const auto buffers = model.named_buffers(true);
  auto convert = [](const auto& from, const auto& like, auto& to) {
    for (const auto& [name, t] : from) {
      const at::Tensor* target = like.find(name);
      to.emplace_back(name, target ? t.to(target->scalar_type()) : t);
    }
  };
  convert(ckpt.file.parameters, params, c.parameters);
  convert(ckpt.file.buffers, buffers, c.buffers);
  train::restore_module(c, model);
}

YoloModel load_yolo_model(const YoloCheckpoint& ckpt) {
  YoloModel model(YoloOptions{.scale = ckpt.meta.scale,
                              .num_classes = static_cast<int64_t>(ckpt.meta.names.size()),
                              .reg_max = 16,
                              .norm = {}});
  restore_yolo_weights(ckpt, *model);
  model->eval();
  return model;
}

}  // namespace tandem::detect
