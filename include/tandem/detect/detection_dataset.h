// A detection data set in the Ultralytics layout (see dataset_config.h): the
// usable images of one split, their labels (scanned once, cached; see
// label_cache.h) and the per-sample pipeline that turns a file into a
// training or evaluation sample.
//
// Evaluation (augment off): the image is letterboxed into imgsz x imgsz.
// Training (augment on): mosaic of four images (or a letterboxed single image
// when mosaic is off), random scale and translate, HSV jitter and flips.
// Randomness is drawn from (seed, epoch, index), so a sample is the same on
// every rank and thread that loads it.
// Thread-safe: get() is const and may run on several threads at once;
// set_mosaic() must not race with get(). Nothing here is collective.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tandem/detect/dataset_config.h"
#include "tandem/detect/label_cache.h"

namespace tandem::detect {

namespace detail {
class ImageStore;
}

// Where decoded images are kept between uses (Ultralytics' `cache`): not at
// all (decode the file every time), in memory (each image resized to imgsz
// after its first use: about imgsz^2 x 3 bytes per image), or on disk
// (IMAGE.npy beside each file: the decoded image, reused while newer than
// the file). The samples are the same in every mode.
enum class ImageCache { kOff, kRam, kDisk };

// Augmentation settings; the defaults are Ultralytics' (default.yaml).
struct AugmentOptions {
  double hsv_h = 0.015;    // hue gain (fraction)
  double hsv_s = 0.7;      // saturation gain (fraction)
  double hsv_v = 0.4;      // value gain (fraction)
  double translate = 0.1;  // +/- fraction of the image
  double scale = 0.5;      // +/- gain
  double flipud = 0.0;     // probability
  double fliplr = 0.5;     // probability
  bool mosaic = true;      // four images in one; switched off for the last epochs
};

struct DetectionDatasetOptions {
  int64_t imgsz = 640;   // square side of every sample, a multiple of 32
  bool augment = false;  // the training pipeline (true) or letterbox only (false)
  AugmentOptions aug;
  bool cache_labels = true;  // read/write labels/<split>.cache
  ImageCache cache = ImageCache::kOff;
  uint64_t seed = 0;  // for the augmentation draws
};

// One sample: an image and its objects.
struct DetectionSample {
  at::Tensor image;                // float32 [3, imgsz, imgsz], RGB in [0, 1]
  at::Tensor labels;               // float32 [n, 5]: class, x, y, w, h normalised to the sample
  std::string path;                // the image file
  int64_t orig_h = 0, orig_w = 0;  // the file's size
  double ratio = 1;                // letterbox: sample pixels per file pixel
  double pad_x = 0, pad_y = 0;     // letterbox: padding in sample pixels
};

class DetectionDataset {
 public:
  // Scans `split` of `config`. Bad images and label files are logged once,
  // skipped and counted in report(). Throws tandem::InvalidArgument for an
  // imgsz that is not a positive multiple of 32, a probability outside
  // [0, 1], or a split without any usable image.
  DetectionDataset(const DatasetConfig& config, Split split, DetectionDatasetOptions options);
  ~DetectionDataset();
  DetectionDataset(DetectionDataset&&) noexcept;
  DetectionDataset& operator=(DetectionDataset&&) noexcept;

  int64_t size() const { return static_cast<int64_t>(records_.size()); }
  int64_t num_classes() const { return static_cast<int64_t>(names_.size()); }
  const std::vector<std::string>& names() const { return names_; }
  const ScanReport& report() const { return report_; }
  const std::vector<ImageRecord>& records() const { return records_; }
  const DetectionDatasetOptions& options() const { return options_; }

  // Sample `index` of epoch `epoch`. Throws tandem::InvalidArgument for an
  // index out of range, or naming the file if it cannot be read any more.
  DetectionSample get(int64_t index, int64_t epoch = 0) const;

  // Turns mosaic on or off (Ultralytics' close_mosaic).
  void set_mosaic(bool on) { options_.aug.mosaic = on; }

 private:
  std::vector<std::string> names_;
  std::vector<ImageRecord> records_;
  ScanReport report_;
  DetectionDatasetOptions options_;
  std::string description_;
  std::unique_ptr<detail::ImageStore> images_;
};

}  // namespace tandem::detect
