// The scan of a split's images and labels, and its cache. Scanning decodes
// every image once (to find corrupt files and record its size) and checks
// every label file; the result is saved as JSON beside the labels
// (labels/train.cache for labels/train/*.txt, as Ultralytics names it) and
// reused while no image or label file has changed (same paths, sizes and
// modification times). Each rejected file is logged once per scan with its
// path and reason, and counted. Thread-safe: plain functions; two processes
// writing one cache replace it atomically (write to a temporary, rename).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tandem/detect/label_file.h"

namespace tandem::detect {

// One usable image and its objects.
struct ImageRecord {
  std::string image;
  std::string label;
  std::vector<BoxLabel> boxes;
  int64_t height = 0;  // of the decoded image, in pixels
  int64_t width = 0;
};

struct ScanReport {
  int64_t images = 0;          // images listed
  int64_t usable = 0;          // images kept (records)
  int64_t missing_labels = 0;  // kept without objects: no label file
  int64_t empty_labels = 0;    // kept without objects: an empty label file
  int64_t duplicates = 0;      // duplicate label rows dropped
  // Images skipped, with the reason: a corrupt image or a rejected label file.
  std::vector<std::pair<std::string, std::string>> skipped;
  bool from_cache = false;
  std::string cache_path;  // empty when caching was off
};

struct LabelScan {
  std::vector<ImageRecord> records;
  ScanReport report;
};

// Scans `images` (see list_image_files) for a data set of `num_classes`
// classes. With `use_cache`, reads the cache when it matches and writes it
// otherwise; a cache that cannot be written is logged and skipped. Never
// throws for a bad image or label; throws tandem::InvalidArgument if
// `images` is empty or num_classes < 1.
LabelScan scan_labels(const std::vector<std::string>& images, int64_t num_classes,
                      bool use_cache = true);

// Where scan_labels keeps the cache of `images`: beside the first image's
// label folder, named after it (labels/train -> labels/train.cache).
std::string label_cache_path(const std::vector<std::string>& images);

// One line summarising a scan, e.g. "128 images, 2 skipped (corrupt), 3
// without labels, 1 empty label file".
std::string describe(const ScanReport& report);

}  // namespace tandem::detect
