// TrainArgs: the settings of a detection training run, named and defaulted
// as Ultralytics' (ultralytics/cfg/default.yaml), and their text forms: the
// command line's `key=value` (or `--key value`) tokens and the run folder's
// args.yaml. Parsing and validation happen here, once; the training loop
// reads typed fields only.
// Thread-safe: plain functions over value types. Nothing is collective.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tandem/detect/detection_dataset.h"
#include "tandem/train/choices.h"

namespace tandem::train {
// cache=false|ram|disk (Ultralytics' spellings; true means ram).
template <>
struct Choices<detect::ImageCache> {
  static constexpr std::string_view kFlag = "cache";
  static constexpr std::array<std::pair<detect::ImageCache, std::string_view>, 3> kNames = {{
      {detect::ImageCache::kOff, "false"},
      {detect::ImageCache::kRam, "ram"},
      {detect::ImageCache::kDisk, "disk"},
  }};
};
}  // namespace tandem::train

namespace tandem::detect {

struct TrainArgs {
  // What to train: a scale ("yolo-n" .. "yolo-x") or a checkpoint file
  // (weights/last.ckpt, best.ckpt) to start from.
  std::string model = "yolo-n";
  std::string data;      // the dataset YAML (required)
  int64_t epochs = 100;  // passes over the training split
  int64_t imgsz = 640;   // square input side, a multiple of 32
  int64_t batch = 16;    // global batch, split evenly over the devices
  // Devices: empty or {-1} ("cpu") is one process; {0, 1} is two ranks. On
  // this CPU build a device is a process with its share of the cores.
  std::vector<int> device;
  std::string project = "runs/detect";  // parent of the run folders
  std::string name = "train";           // run folder: train, train2, ...
  bool exist_ok = false;                // reuse project/name instead of numbering
  uint64_t seed = 0;                    // sample order, augmentation and model init
  // Optimizer and schedule (SGD with Nesterov momentum; see Note [Yolo
  // schedule] in src/detect/yolo_trainer.cpp).
  double lr0 = 0.01;                       // initial learning rate
  double lrf = 0.01;                       // final rate as a fraction of lr0
  double momentum = 0.937;                 // SGD momentum
  double weight_decay = 5e-4;              // on conv/linear weights only, scaled by batch/nbs
  double warmup_epochs = 3.0;              // warmup length: max(this many epochs, 100 steps)
  double warmup_momentum = 0.8;            // momentum at the start of warmup
  double warmup_bias_lr = 0.1;             // bias learning rate at the start of warmup
  bool cos_lr = false;                     // cosine instead of linear decay
  int64_t nbs = 64;                        // nominal batch: gradients accumulate to it
  int64_t close_mosaic = 10;               // mosaic off for the last this many epochs
  double box = 7.5, cls = 0.5, dfl = 1.5;  // loss gains
  // Augmentation (DetectionDataset's AugmentOptions).
  double hsv_h = 0.015, hsv_s = 0.7, hsv_v = 0.4;
  double translate = 0.1, scale = 0.5;
  double fliplr = 0.5, flipud = 0.0;
  double mosaic = 1.0;  // 0 or 1: four images per sample
  // Data loading (detection_loader.h). Threads per rank that decode and
  // augment the next batches while the current one trains, capped at the
  // rank's share of the cores; 0 loads on the training thread. The batches
  // are the same for any value.
  int64_t workers = 8;
  // Decoded images kept between epochs: kOff, kRam (resized, in memory) or
  // kDisk (IMAGE.npy beside each image). Same samples in every mode.
  ImageCache cache = ImageCache::kOff;
  // Other.
  bool val = true;           // validate after every epoch (else after the last only)
  bool sync_bn = false;      // SyncBatchNorm over the ranks instead of BatchNorm
  bool plots = true;         // results.png etc. (needs gnuplot)
  int64_t save_period = -1;  // also keep weights/epoch<N>.ckpt every this many epochs (-1: off)
  std::string resume;        // "", "true" (the newest run's last.ckpt) or a checkpoint path
  train::Dtype dtype = train::Dtype::kFloat32;  // float64: for exact comparisons
  double max_norm = 10.0;                       // gradient clipping (L2 norm of all gradients)
};

// The keys parse_train_args accepts, in args.yaml order.
const std::vector<std::string>& train_arg_keys();

// Parses `key=value` tokens (Ultralytics' syntax) and `--key value` or
// `--key=value` pairs into `args` (fields not named keep their values).
// Throws tandem::InvalidArgument for an unknown key (naming it and listing
// the valid ones), a value of the wrong type or a key without a value.
void parse_train_args(const std::vector<std::string>& tokens, TrainArgs& args);

// The key/value pairs of `tokens` in the same syntax, for any command whose
// keys are `keys` ("detect val", "detect predict"). Throws
// tandem::InvalidArgument naming `command` and the token for an unknown key
// (listing `keys`) or a key without a value.
std::vector<std::pair<std::string, std::string>> split_key_values(
    const std::vector<std::string>& tokens, const std::string& command,
    const std::vector<std::string>& keys);

// Sets one field from text, as parse_train_args does for one pair.
void set_train_arg(TrainArgs& args, const std::string& key, const std::string& value);

// Reads one value as parse_train_args does: text trimmed, whole numbers,
// numbers, booleans (true/false, 1/0, yes/no, on/off). Throws
// tandem::InvalidArgument naming `key` and `value`.
void parse_value(const std::string& key, const std::string& value, std::string& out);
void parse_value(const std::string& key, const std::string& value, int64_t& out);
void parse_value(const std::string& key, const std::string& value, double& out);
void parse_value(const std::string& key, const std::string& value, bool& out);

// Parses a device list: "cpu" or "" -> {}, "0" -> {0}, "0,1" or "[0, 1]" ->
// {0, 1}. Throws tandem::InvalidArgument for anything else or a duplicate.
std::vector<int> parse_device(const std::string& text);

// Checks every field's range (InvalidArgument naming the key, the value and
// the rule). Does not touch the file system.
void validate(const TrainArgs& args);

// "key: value" lines of every field, in train_arg_keys() order (args.yaml).
std::string to_yaml(const TrainArgs& args);

// The reverse of to_yaml: sets every key found in `yaml` ("key: value"
// lines, strings optionally in single quotes). Throws tandem::InvalidArgument
// as set_train_arg does.
void parse_train_args_yaml(const std::string& yaml, TrainArgs& args);

// The number of ranks `args` asks for: max(1, device.size()).
int world_size_of(const TrainArgs& args);

}  // namespace tandem::detect
