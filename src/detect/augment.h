// Private to src/detect: the image operations behind DetectionDataset, on
// OpenCV BGR images and pixel boxes, as Ultralytics' data pipeline does them
// (ultralytics/data/augment.py: LetterBox, RandomHSV, RandomFlip,
// RandomPerspective without rotation, shear or perspective, Mosaic).
// Thread-safe: every function works on its arguments only; randomness comes
// from the generator passed in.
#pragma once

#include <opencv2/core.hpp>
#include <vector>

#include "train/data/portable_random.h"

namespace tandem::detect::detail {

using Rng = tandem::train::detail::Xoshiro256;

// Uniform in [lo, hi).
inline double uniform(Rng& rng, double lo, double hi) {
  return lo + (hi - lo) * static_cast<double>(rng.next() >> 11) * (1.0 / 9007199254740992.0);
}

// A box in pixels, corners (x1, y1) top-left and (x2, y2) bottom-right.
struct PixelBox {
  int64_t cls = 0;
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;
};

// Gray border value of letterbox, mosaic and affine fills.
constexpr int kPadValue = 114;

// Resizes `image` so that its longer side is `size` (never larger than
// `size`), with linear interpolation when growing or augmenting, area
// interpolation when shrinking for evaluation.
cv::Mat resize_long_side(const cv::Mat& image, int size, bool augment);

struct Letterboxed {
  cv::Mat image;     // size x size
  double ratio = 1;  // resized = original * ratio
  double pad_x = 0;  // left padding in pixels (fractional: half the slack)
  double pad_y = 0;  // top padding
};

// Scales `image` to fit a size x size square keeping its aspect ratio and
// pads the rest with kPadValue, centred.
Letterboxed letterbox(const cv::Mat& image, int size);

// Multiplies hue, saturation and value by 1 + uniform(-gain, gain) each.
void augment_hsv(cv::Mat& image, double h_gain, double s_gain, double v_gain, Rng& rng);

// Mirrors the image left-right (or up-down) and its boxes with it.
void flip_lr(cv::Mat& image, std::vector<PixelBox>& boxes);
void flip_ud(cv::Mat& image, std::vector<PixelBox>& boxes);

// Scales by uniform(1 - scale, 1 + scale) about the image centre and moves
// the centre to uniform(0.5 - translate, 0.5 + translate) of an output of
// out_w x out_h pixels; boxes follow, are clipped to the output and dropped
// when they become smaller than 2 pixels, lose 90% of their (scaled) area or
// turn thinner than 1:100.
cv::Mat random_affine(const cv::Mat& image, std::vector<PixelBox>& boxes, int out_w, int out_h,
                      double scale, double translate, Rng& rng);

// Applies the affine matrix `m` (2x3) to the boxes' corners, then clips and
// filters as random_affine does; `gain` is the scale that m applies.
std::vector<PixelBox> transform_boxes(const std::vector<PixelBox>& boxes, const cv::Matx23d& m,
                                      double gain, int out_w, int out_h);

// Places four images (each already resized to a long side of `size`) around
// a random centre in [size/2, 3*size/2) of a 2*size square canvas, as
// Ultralytics' Mosaic does; the boxes move with their image and are clipped
// to the canvas.
cv::Mat mosaic4(const std::vector<cv::Mat>& images, const std::vector<std::vector<PixelBox>>& boxes,
                int size, std::vector<PixelBox>& out_boxes, Rng& rng);

}  // namespace tandem::detect::detail
