#include "detect/augment.h"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "tandem/core/check.h"

namespace tandem::detect::detail {

cv::Mat resize_long_side(const cv::Mat& image, int size, bool augment) {
  const double r = static_cast<double>(size) / std::max(image.rows, image.cols);
  if (r == 1.0) return image;
  const int w = std::min(static_cast<int>(std::ceil(image.cols * r)), size);
  const int h = std::min(static_cast<int>(std::ceil(image.rows * r)), size);
  cv::Mat out;
  cv::resize(image, out, cv::Size(std::max(w, 1), std::max(h, 1)), 0, 0,
             (augment || r > 1) ? cv::INTER_LINEAR : cv::INTER_AREA);
  return out;
}

Letterboxed letterbox(const cv::Mat& image, int size) {
  TANDEM_ASSERT(!image.empty() && size > 0, "letterbox of an empty image or size {}", size);
  Letterboxed out;
  out.ratio =
      std::min(static_cast<double>(size) / image.rows, static_cast<double>(size) / image.cols);
  const int w = static_cast<int>(std::round(image.cols * out.ratio));
  const int h = static_cast<int>(std::round(image.rows * out.ratio));
  cv::Mat resized = image;
  if (w != image.cols || h != image.rows) {
    cv::resize(image, resized, cv::Size(w, h), 0, 0, cv::INTER_LINEAR);
  }
  out.pad_x = (size - w) / 2.0;
  out.pad_y = (size - h) / 2.0;
  const int top = static_cast<int>(std::round(out.pad_y - 0.1));
  const int left = static_cast<int>(std::round(out.pad_x - 0.1));
  cv::copyMakeBorder(resized, out.image, top, size - h - top, left, size - w - left,
                     cv::BORDER_CONSTANT, cv::Scalar::all(kPadValue));
  out.pad_x = left;
  out.pad_y = top;
  return out;
}

void augment_hsv(cv::Mat& image, double h_gain, double s_gain, double v_gain, Rng& rng) {
  if (h_gain == 0 && s_gain == 0 && v_gain == 0) return;
  const double rh = uniform(rng, -1, 1) * h_gain + 1;
  const double rs = uniform(rng, -1, 1) * s_gain + 1;
  const double rv = uniform(rng, -1, 1) * v_gain + 1;
  cv::Mat hsv;
  cv::cvtColor(image, hsv, cv::COLOR_BGR2HSV);
  cv::Mat lut_h(1, 256, CV_8U), lut_s(1, 256, CV_8U), lut_v(1, 256, CV_8U);
  for (int x = 0; x < 256; ++x) {
    lut_h.at<uint8_t>(x) = static_cast<uint8_t>(static_cast<int>(x * rh) % 180);
    lut_s.at<uint8_t>(x) = static_cast<uint8_t>(std::clamp(x * rs, 0.0, 255.0));
    lut_v.at<uint8_t>(x) = static_cast<uint8_t>(std::clamp(x * rv, 0.0, 255.0));
  }
  std::vector<cv::Mat> ch;
  cv::split(hsv, ch);
  cv::LUT(ch[0], lut_h, ch[0]);
  cv::LUT(ch[1], lut_s, ch[1]);
  cv::LUT(ch[2], lut_v, ch[2]);
  cv::merge(ch, hsv);
  cv::cvtColor(hsv, image, cv::COLOR_HSV2BGR);
}

void flip_lr(cv::Mat& image, std::vector<PixelBox>& boxes) {
  cv::flip(image, image, 1);
  const float w = static_cast<float>(image.cols);
  for (auto& b : boxes) {
    const float x1 = w - b.x2;
    b.x2 = w - b.x1;
    b.x1 = x1;
  }
}

void flip_ud(cv::Mat& image, std::vector<PixelBox>& boxes) {
  cv::flip(image, image, 0);
  const float h = static_cast<float>(image.rows);
  for (auto& b : boxes) {
    const float y1 = h - b.y2;
    b.y2 = h - b.y1;
    b.y1 = y1;
  }
}

std::vector<PixelBox> transform_boxes(const std::vector<PixelBox>& boxes, const cv::Matx23d& m,
                                      double gain, int out_w, int out_h) {
  std::vector<PixelBox> out;
  for (const auto& b : boxes) {
    const double xs[4] = {b.x1, b.x2, b.x2, b.x1};
    const double ys[4] = {b.y1, b.y1, b.y2, b.y2};
    double x1 = 1e30, y1 = 1e30, x2 = -1e30, y2 = -1e30;
    for (int k = 0; k < 4; ++k) {
      const double x = m(0, 0) * xs[k] + m(0, 1) * ys[k] + m(0, 2);
      const double y = m(1, 0) * xs[k] + m(1, 1) * ys[k] + m(1, 2);
      x1 = std::min(x1, x), x2 = std::max(x2, x), y1 = std::min(y1, y), y2 = std::max(y2, y);
    }
    x1 = std::clamp(x1, 0.0, double(out_w)), x2 = std::clamp(x2, 0.0, double(out_w));
    y1 = std::clamp(y1, 0.0, double(out_h)), y2 = std::clamp(y2, 0.0, double(out_h));
    // Ultralytics' box_candidates: wh_thr 2 px, area_thr 0.1, ar_thr 100.
    const double w0 = (b.x2 - b.x1) * gain, h0 = (b.y2 - b.y1) * gain;
    const double w = x2 - x1, h = y2 - y1;
    const double ar = std::max(w / (h + 1e-16), h / (w + 1e-16));
    if (w > 2 && h > 2 && w * h / (w0 * h0 + 1e-16) > 0.1 && ar < 100) {
      out.push_back(PixelBox{b.cls, float(x1), float(y1), float(x2), float(y2)});
    }
  }
  return out;
}

cv::Mat random_affine(const cv::Mat& image, std::vector<PixelBox>& boxes, int out_w, int out_h,
                      double scale, double translate, Rng& rng) {
  const double s = uniform(rng, 1 - scale, 1 + scale);
  const double tx = uniform(rng, 0.5 - translate, 0.5 + translate) * out_w;
  const double ty = uniform(rng, 0.5 - translate, 0.5 + translate) * out_h;
  // x' = s * (x - W/2) + tx: centre, scale, translate (Ultralytics' T @ R @ C).
  const cv::Matx23d m(s, 0, tx - s * image.cols / 2.0, 0, s, ty - s * image.rows / 2.0);
  cv::Mat out;
  cv::warpAffine(image, out, cv::Mat(m), cv::Size(out_w, out_h), cv::INTER_LINEAR,
                 cv::BORDER_CONSTANT, cv::Scalar::all(kPadValue));
  boxes = transform_boxes(boxes, m, s, out_w, out_h);
  return out;
}

cv::Mat mosaic4(const std::vector<cv::Mat>& images, const std::vector<std::vector<PixelBox>>& boxes,
                int size, std::vector<PixelBox>& out_boxes, Rng& rng) {
  TANDEM_ASSERT(images.size() == 4 && boxes.size() == 4, "mosaic4 takes four images");
  const int s2 = 2 * size;
  const int xc = static_cast<int>(uniform(rng, size / 2.0, 1.5 * size));
  const int yc = static_cast<int>(uniform(rng, size / 2.0, 1.5 * size));
  cv::Mat canvas(s2, s2, CV_8UC3, cv::Scalar::all(kPadValue));
  out_boxes.clear();
  for (int i = 0; i < 4; ++i) {
    const int h = images[i].rows, w = images[i].cols;
    int x1a, y1a, x2a, y2a, x1b, y1b, x2b, y2b;
    if (i == 0) {  // top left
      x1a = std::max(xc - w, 0), y1a = std::max(yc - h, 0), x2a = xc, y2a = yc;
      x1b = w - (x2a - x1a), y1b = h - (y2a - y1a), x2b = w, y2b = h;
    } else if (i == 1) {  // top right
      x1a = xc, y1a = std::max(yc - h, 0), x2a = std::min(xc + w, s2), y2a = yc;
      x1b = 0, y1b = h - (y2a - y1a), x2b = std::min(w, x2a - x1a), y2b = h;
    } else if (i == 2) {  // bottom left
      x1a = std::max(xc - w, 0), y1a = yc, x2a = xc, y2a = std::min(s2, yc + h);
      x1b = w - (x2a - x1a), y1b = 0, x2b = w, y2b = std::min(y2a - y1a, h);
    } else {  // bottom right
      x1a = xc, y1a = yc, x2a = std::min(xc + w, s2), y2a = std::min(s2, yc + h);
      x1b = 0, y1b = 0, x2b = std::min(w, x2a - x1a), y2b = std::min(y2a - y1a, h);
    }
    images[i](cv::Rect(x1b, y1b, x2b - x1b, y2b - y1b))
        .copyTo(canvas(cv::Rect(x1a, y1a, x2a - x1a, y2a - y1a)));
    const float padw = static_cast<float>(x1a - x1b), padh = static_cast<float>(y1a - y1b);
    for (const auto& b : boxes[i]) {
      PixelBox m{b.cls, std::clamp(b.x1 + padw, 0.f, float(s2)),
                 std::clamp(b.y1 + padh, 0.f, float(s2)), std::clamp(b.x2 + padw, 0.f, float(s2)),
                 std::clamp(b.y2 + padh, 0.f, float(s2))};
      if (m.x2 > m.x1 && m.y2 > m.y1) out_boxes.push_back(m);
    }
  }
  return canvas;
}

}  // namespace tandem::detect::detail
