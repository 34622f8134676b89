#include "tandem/detect/make_shapes.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "detect/augment.h"
#include "tandem/core/check.h"

namespace tandem::detect {
namespace fs = std::filesystem;
namespace {

using detail::Rng;
using detail::uniform;

enum Shape { kCircle = 0, kSquare = 1, kTriangle = 2, kCross = 3, kShapes = 4 };

struct Box {
  double x1, y1, x2, y2;
};

double iou(const Box& a, const Box& b) {
  const double iw = std::max(0.0, std::min(a.x2, b.x2) - std::max(a.x1, b.x1));
  const double ih = std::max(0.0, std::min(a.y2, b.y2) - std::max(a.y1, b.y1));
  const double inter = iw * ih;
  const double area = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter;
  return inter / area;
}

cv::Vec3b random_colour(Rng& rng) {
  return cv::Vec3b(static_cast<uint8_t>(rng.below(256)), static_cast<uint8_t>(rng.below(256)),
                   static_cast<uint8_t>(rng.below(256)));
}

// A smooth gradient between two colours, a few faint lines and blobs, then
// per-pixel noise.
cv::Mat background(int size, Rng& rng) {
  const cv::Vec3b a = random_colour(rng), b = random_colour(rng);
  const double angle = uniform(rng, 0, 2 * std::numbers::pi);
  const double dx = std::cos(angle), dy = std::sin(angle);
  cv::Mat img(size, size, CV_8UC3);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      const double t =
          std::clamp(0.5 + ((x - size / 2.0) * dx + (y - size / 2.0) * dy) / size, 0.0, 1.0);
      for (int c = 0; c < 3; ++c)
        img.at<cv::Vec3b>(y, x)[c] = cv::saturate_cast<uint8_t>(a[c] * (1 - t) + b[c] * t);
    }
  }
  const int marks = 4 + static_cast<int>(rng.below(8));
  for (int i = 0; i < marks; ++i) {
    cv::Vec3b c = random_colour(rng);
    const cv::Scalar colour(c[0], c[1], c[2]);
    const cv::Point p(static_cast<int>(rng.below(size)), static_cast<int>(rng.below(size)));
    if (rng.below(2) == 0) {
      const cv::Point q(static_cast<int>(rng.below(size)), static_cast<int>(rng.below(size)));
      cv::line(img, p, q, colour, 1 + static_cast<int>(rng.below(2)), cv::LINE_AA);
    } else {
      const cv::Size axes(2 + static_cast<int>(rng.below(size / 8)),
                          2 + static_cast<int>(rng.below(size / 8)));
      cv::ellipse(img, p, axes, uniform(rng, 0, 180), 0, 360, colour, 1, cv::LINE_AA);
    }
  }
  const int amplitude = 8 + static_cast<int>(rng.below(24));
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      auto& px = img.at<cv::Vec3b>(y, x);
      for (int c = 0; c < 3; ++c) {
        const int n = static_cast<int>(rng.below(2 * amplitude + 1)) - amplitude;
        px[c] = cv::saturate_cast<uint8_t>(px[c] + n);
      }
    }
  }
  return img;
}

// The outline of a shape of side `d` centred at (cx, cy), turned by `angle`.
std::vector<cv::Point> polygon(Shape shape, double cx, double cy, double d, double angle) {
  std::vector<std::pair<double, double>> pts;
  const double r = d / 2;
  if (shape == kSquare) {
    pts = {{-r, -r}, {r, -r}, {r, r}, {-r, r}};
  } else if (shape == kTriangle) {
    for (int k = 0; k < 3; ++k) {
      const double a = -std::numbers::pi / 2 + k * 2 * std::numbers::pi / 3;
      pts.emplace_back(r * std::cos(a), r * std::sin(a));
    }
  } else {  // cross: arms of a third of the side
    const double t = d / 6;
    pts = {{-t, -r}, {t, -r}, {t, -t}, {r, -t}, {r, t},   {t, t},
           {t, r},   {-t, r}, {-t, t}, {-r, t}, {-r, -t}, {-t, -t}};
  }
  std::vector<cv::Point> out;
  const double c = std::cos(angle), s = std::sin(angle);
  for (auto [x, y] : pts) {
    out.emplace_back(static_cast<int>(std::lround(cx + x * c - y * s)),
                     static_cast<int>(std::lround(cy + x * s + y * c)));
  }
  return out;
}

// Draws one shape, returning its box; false when it would overlap too much.
bool draw_shape(cv::Mat& img, Shape shape, std::vector<Box>& placed, Rng& rng, Box& box) {
  const int size = img.cols;
  const double d = uniform(rng, 0.12, 0.42) * size;
  const double cx = uniform(rng, d / 2 + 1, size - d / 2 - 1);
  const double cy = uniform(rng, d / 2 + 1, size - d / 2 - 1);
  const double angle = shape == kCircle ? 0 : uniform(rng, -0.35, 0.35);
  std::vector<cv::Point> pts;
  if (shape == kCircle) {
    box = {cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2};
  } else {
    pts = polygon(shape, cx, cy, d, angle);
    box = {1e9, 1e9, -1e9, -1e9};
    for (const auto& p : pts) {
      box = {std::min(box.x1, double(p.x)), std::min(box.y1, double(p.y)),
             std::max(box.x2, double(p.x)), std::max(box.y2, double(p.y))};
    }
  }
  // Some overlap, never so much that a shape hides another.
  for (const auto& other : placed) {
    if (iou(box, other) > 0.2) return false;
  }
  // A colour far from the background under the shape's centre.
  const cv::Vec3b under = img.at<cv::Vec3b>(static_cast<int>(cy), static_cast<int>(cx));
  cv::Vec3b colour;
  for (int tries = 0;; ++tries) {
    colour = random_colour(rng);
    int dist = 0;
    for (int c = 0; c < 3; ++c) dist += std::abs(int(colour[c]) - int(under[c]));
    if (dist > 200 || tries > 20) break;
  }
  const cv::Scalar fill(colour[0], colour[1], colour[2]);
  if (shape == kCircle) {
    cv::circle(img, cv::Point(static_cast<int>(std::lround(cx)), static_cast<int>(std::lround(cy))),
               static_cast<int>(std::lround(d / 2)), fill, cv::FILLED, cv::LINE_AA);
  } else {
    cv::fillPoly(img, std::vector<std::vector<cv::Point>>{pts}, fill, cv::LINE_AA);
  }
  placed.push_back(box);
  return true;
}

std::string write_one(const fs::path& dir, const std::string& split, int64_t index, int size,
                      uint64_t seed, int64_t& objects) {
  Rng rng(tandem::train::detail::mix_seed(
      seed, static_cast<uint64_t>(index) * 2 + (split == "val" ? 1 : 0)));
  cv::Mat img = background(size, rng);
  const int wanted = 1 + static_cast<int>(rng.below(6));
  std::vector<Box> placed;
  std::string label;
  for (int k = 0, tries = 0; k < wanted && tries < 60; ++tries) {
    const Shape shape = static_cast<Shape>(rng.below(kShapes));
    Box b;
    if (!draw_shape(img, shape, placed, rng, b)) continue;
    ++k;
    const double x1 = std::max(0.0, b.x1), y1 = std::max(0.0, b.y1);
    const double x2 = std::min(double(size), b.x2 + 1), y2 = std::min(double(size), b.y2 + 1);
    label += fmt::format("{} {:.6f} {:.6f} {:.6f} {:.6f}\n", int(shape), (x1 + x2) / 2 / size,
                         (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size);
    ++objects;
  }
  const std::string stem = fmt::format("{:06d}", index);
  const std::string ext = index % 4 == 3 ? ".png" : ".jpg";
  const fs::path image_path = dir / "images" / split / (stem + ext);
  TANDEM_CHECK(cv::imwrite(image_path.string(), img, {cv::IMWRITE_JPEG_QUALITY, 92}),
               "make-shapes: cannot write '{}'", image_path.string());
  const fs::path label_path = dir / "labels" / split / (stem + ".txt");
  std::ofstream out(label_path);
  out << label;
  TANDEM_CHECK(out.good(), "make-shapes: cannot write '{}'", label_path.string());
  return image_path.string();
}

}  // namespace

const std::vector<std::string>& shape_class_names() {
  static const std::vector<std::string> names = {"circle", "square", "triangle", "cross"};
  return names;
}

MakeShapesResult make_shapes(const MakeShapesOptions& options) {
  TANDEM_CHECK(!options.dir.empty(), "make-shapes: the output folder is empty");
  TANDEM_CHECK(options.train >= 0 && options.val >= 0 && options.train + options.val > 0,
               "make-shapes: --train and --val must be non-negative and not both 0 (got {} and "
               "{})",
               options.train, options.val);
  TANDEM_CHECK(options.imgsz >= 64 && options.imgsz <= 4096,
               "make-shapes: --imgsz must be in [64, 4096], got {}", options.imgsz);
  const fs::path dir = fs::absolute(options.dir).lexically_normal();
  std::error_code ec;
  for (const char* kind : {"images", "labels"}) {
    for (const char* split : {"train", "val"}) {
      fs::create_directories(dir / kind / split, ec);
      TANDEM_CHECK(!ec, "make-shapes: cannot create '{}': {}", (dir / kind / split).string(),
                   ec.message());
    }
  }
  MakeShapesResult result;
  const int size = static_cast<int>(options.imgsz);
  for (int64_t i = 0; i < options.train; ++i) {
    write_one(dir, "train", i, size, options.seed, result.objects);
  }
  for (int64_t i = 0; i < options.val; ++i) {
    write_one(dir, "val", i, size, options.seed, result.objects);
  }
  result.images = options.train + options.val;
  result.yaml_path = (dir / "shapes.yaml").string();
  std::ofstream yaml(result.yaml_path);
  yaml << "# Synthetic shapes, written by `tandem detect make-shapes`.\n"
       << "path: " << dir.string() << "\n"
       << "train: images/train\nval: images/val\n\nnames:\n";
  for (size_t i = 0; i < shape_class_names().size(); ++i) {
    yaml << "  " << i << ": " << shape_class_names()[i] << "\n";
  }
  TANDEM_CHECK(yaml.good(), "make-shapes: cannot write '{}'", result.yaml_path);
  return result;
}

}  // namespace tandem::detect
