// Private to src/detect: where DetectionDataset gets its images, decoded
// and resized to a long side of imgsz, with the `cache` choice of
// TrainArgs (Ultralytics' cache=false|ram|disk):
//   kOff:  decode the file on every use;
//   kRam:  keep each resized image in memory after its first use;
//   kDisk: keep the decoded image (full size, 8-bit BGR) in IMAGE.npy
//          beside the file (e.g. 000001.jpg.npy, NumPy's .npy format, shape
//          [h, w, 3] uint8), reused while it is newer than the image, so
//          only the resize is repeated.
// Every mode returns the same pixels. Thread-safe: get() may run on several
// threads at once (in kRam mode two threads asking for a new image together
// may both decode it; the results are equal).
#pragma once

#include <cstdint>
#include <mutex>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "tandem/detect/detection_dataset.h"

namespace tandem::detect::detail {

class ImageStore {
 public:
  // `paths`: the images, by sample index. `augment` picks the resize's
  // interpolation (see resize_long_side).
  ImageStore(std::vector<std::string> paths, int size, bool augment, ImageCache cache);

  // Image `index`, resized; shares memory with the cache: do not modify it.
  // Throws tandem::InvalidArgument naming the file when it cannot be read.
  cv::Mat get(int64_t index) const;

 private:
  cv::Mat decode(int64_t index) const;

  std::vector<std::string> paths_;
  int size_;
  bool augment_;
  ImageCache cache_;
  mutable std::mutex mu_;
  mutable std::vector<cv::Mat> ram_;  // guarded by mu_ (kRam)
  mutable bool disk_warned_ = false;  // guarded by mu_
};

// The .npy file of `image` in kDisk mode.
std::string npy_path(const std::string& image);

// Writes an 8-bit 3-channel image as .npy (through a temporary and a
// rename). Throws tandem::Error naming the file when it cannot.
void write_npy(const std::string& path, const cv::Mat& bgr);

// Reads a .npy file write_npy wrote; an empty Mat when the file is missing,
// not such an array or truncated.
cv::Mat read_npy(const std::string& path);

}  // namespace tandem::detect::detail
