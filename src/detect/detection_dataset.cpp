#include "tandem/detect/detection_dataset.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <opencv2/imgproc.hpp>

#include "detect/augment.h"
#include "detect/cv_tensor.h"
#include "detect/image_store.h"
#include "tandem/core/check.h"
#include "tandem/core/log.h"

namespace tandem::detect {
namespace {

using detail::PixelBox;
using detail::Rng;

void check_options(const DetectionDatasetOptions& o) {
  TANDEM_CHECK(o.imgsz > 0 && o.imgsz % 32 == 0,
               "detection data: imgsz must be a positive multiple of 32 (the largest stride), "
               "got {}",
               o.imgsz);
  for (auto [name, p] : {std::pair{"flipud", o.aug.flipud}, std::pair{"fliplr", o.aug.fliplr}}) {
    TANDEM_CHECK(p >= 0 && p <= 1, "detection data: {} is a probability in [0, 1], got {}", name,
                 p);
  }
  TANDEM_CHECK(o.aug.scale >= 0 && o.aug.scale < 1,
               "detection data: scale must be in [0, 1), got {}", o.aug.scale);
  TANDEM_CHECK(o.aug.translate >= 0 && o.aug.translate <= 0.5,
               "detection data: translate must be in [0, 0.5], got {}", o.aug.translate);
}

// Normalised centre-size labels -> pixel corners on an image of w x h,
// shifted by (pad_x, pad_y) after scaling by (sx, sy).
std::vector<PixelBox> to_pixels(const std::vector<BoxLabel>& labels, double w, double h,
                                double pad_x = 0, double pad_y = 0) {
  std::vector<PixelBox> out;
  out.reserve(labels.size());
  for (const auto& b : labels) {
    out.push_back(PixelBox{b.cls, float((b.x - b.w / 2) * w + pad_x),
                           float((b.y - b.h / 2) * h + pad_y), float((b.x + b.w / 2) * w + pad_x),
                           float((b.y + b.h / 2) * h + pad_y)});
  }
  return out;
}

at::Tensor to_label_tensor(const std::vector<PixelBox>& boxes, double w, double h) {
  at::Tensor t = at::empty({static_cast<int64_t>(boxes.size()), 5}, at::kFloat);
  auto a = t.accessor<float, 2>();
  for (size_t i = 0; i < boxes.size(); ++i) {
    const auto& b = boxes[i];
    a[i][0] = static_cast<float>(b.cls);
    a[i][1] = static_cast<float>((b.x1 + b.x2) / 2 / w);
    a[i][2] = static_cast<float>((b.y1 + b.y2) / 2 / h);
    a[i][3] = static_cast<float>((b.x2 - b.x1) / w);
    a[i][4] = static_cast<float>((b.y2 - b.y1) / h);
  }
  return t;
}

}  // namespace

DetectionDataset::DetectionDataset(const DatasetConfig& config, Split split,
                                   DetectionDatasetOptions options)
    : names_(config.names), options_(std::move(options)) {
  check_options(options_);
  LabelScan scan = scan_labels(list_image_files(config, split), static_cast<int64_t>(names_.size()),
                               options_.cache_labels);
  records_ = std::move(scan.records);
  report_ = std::move(scan.report);
  description_ = fmt::format("dataset '{}' ({})", config.yaml_path, split_name(split));
  TANDEM_CHECK(!records_.empty(), "{}: no usable image among {}; every file was skipped",
               description_, report_.images);
  log::info("{}: {}", description_, describe(report_));
  std::vector<std::string> paths;
  for (const auto& r : records_) paths.push_back(r.image);
  images_ = std::make_unique<detail::ImageStore>(std::move(paths), static_cast<int>(options_.imgsz),
                                                 options_.augment, options_.cache);
}

DetectionDataset::~DetectionDataset() = default;
DetectionDataset::DetectionDataset(DetectionDataset&&) noexcept = default;
DetectionDataset& DetectionDataset::operator=(DetectionDataset&&) noexcept = default;

DetectionSample DetectionDataset::get(int64_t index, int64_t epoch) const {
  TANDEM_CHECK(index >= 0 && index < size(), "{}: index {} is outside [0, {})", description_, index,
               size());
  const int s = static_cast<int>(options_.imgsz);
  const ImageRecord& rec = records_[index];
  DetectionSample sample;
  sample.path = rec.image;
  sample.orig_h = rec.height;
  sample.orig_w = rec.width;
  std::vector<PixelBox> boxes;
  cv::Mat image;
  Rng rng(tandem::train::detail::mix_seed(
      tandem::train::detail::mix_seed(options_.seed, static_cast<uint64_t>(epoch)),
      static_cast<uint64_t>(index)));
  const auto& aug = options_.aug;
  if (options_.augment && aug.mosaic) {
    std::vector<cv::Mat> images;
    std::vector<std::vector<PixelBox>> parts;
    for (int k = 0; k < 4; ++k) {
      const int64_t i = k == 0 ? index : static_cast<int64_t>(rng.below(records_.size()));
      cv::Mat im = images_->get(i);
      parts.push_back(to_pixels(records_[i].boxes, im.cols, im.rows));
      images.push_back(std::move(im));
    }
    cv::Mat canvas = detail::mosaic4(images, parts, s, boxes, rng);
    image = detail::random_affine(canvas, boxes, s, s, aug.scale, aug.translate, rng);
  } else {
    cv::Mat im = images_->get(index);
    detail::Letterboxed lb = detail::letterbox(im, s);
    // Sample pixels per file pixel: the resize then the letterbox's own scale.
    sample.ratio = lb.ratio * static_cast<double>(im.cols) / rec.width;
    sample.pad_x = lb.pad_x;
    sample.pad_y = lb.pad_y;
    boxes = to_pixels(rec.boxes, im.cols * lb.ratio, im.rows * lb.ratio, lb.pad_x, lb.pad_y);
    image = lb.image;
    if (options_.augment) {
      image = detail::random_affine(image, boxes, s, s, aug.scale, aug.translate, rng);
    }
  }
  if (options_.augment) {
    detail::augment_hsv(image, aug.hsv_h, aug.hsv_s, aug.hsv_v, rng);
    if (detail::uniform(rng, 0, 1) < aug.flipud) detail::flip_ud(image, boxes);
    if (detail::uniform(rng, 0, 1) < aug.fliplr) detail::flip_lr(image, boxes);
  }
  sample.image = detail::bgr_to_chw_float(image);
  sample.labels = to_label_tensor(boxes, image.cols, image.rows);
  return sample;
}

}  // namespace tandem::detect
