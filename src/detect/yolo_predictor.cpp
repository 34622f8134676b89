#include "tandem/detect/yolo_predictor.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "detect/augment.h"
#include "detect/cv_tensor.h"
#include "tandem/core/check.h"
#include "tandem/detect/image_io.h"
#include "tandem/detect/nms.h"

namespace tandem::detect {

namespace fs = std::filesystem;

std::vector<std::string> list_sources(const std::string& source) {
  std::vector<std::string> out;
  std::error_code ec;
  if (fs::is_directory(source, ec)) {
    for (const auto& e : fs::recursive_directory_iterator(source, ec)) {
      if (e.is_regular_file() && is_image_file(e.path().string())) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
  } else if (fs::is_regular_file(source, ec) && is_image_file(source)) {
    out.push_back(source);
  }
  TANDEM_CHECK(!out.empty(),
               "detect predict: source='{}' is neither an image (.jpg, .png, .bmp) nor a folder "
               "holding any",
               source);
  return out;
}

std::vector<Prediction> predict_images(YoloModelImpl& model, const std::vector<std::string>& paths,
                                       const PredictOptions& o) {
  TANDEM_CHECK(o.imgsz >= 32 && o.imgsz % 32 == 0,
               "detect predict: imgsz must be a positive multiple of 32, got {}", o.imgsz);
  model.eval();
  at::NoGradGuard no_grad;
  const auto dtype = model.parameters().front().scalar_type();
  NmsOptions nms;
  nms.conf_threshold = o.conf;
  nms.iou_threshold = o.iou;
  nms.max_det = o.max_det;
  std::vector<Prediction> out;
  for (const auto& path : paths) {
    const cv::Mat file = detail::read_bgr(path);
    const int s = static_cast<int>(o.imgsz);
    const cv::Mat resized = detail::resize_long_side(file, s, false);
    const detail::Letterboxed lb = detail::letterbox(resized, s);
    const double ratio = lb.ratio * static_cast<double>(resized.cols) / file.cols;
    at::Tensor input = detail::bgr_to_chw_float(lb.image).unsqueeze(0).to(dtype);
    at::Tensor det = non_max_suppression(model.predict(input), nms)[0].to(at::kFloat);
    // Sample pixels -> file pixels: undo the padding, then the scale.
    for (int k : {0, 2}) det.select(1, k).sub_(lb.pad_x).div_(ratio).clamp_(0, file.cols);
    for (int k : {1, 3}) det.select(1, k).sub_(lb.pad_y).div_(ratio).clamp_(0, file.rows);
    out.push_back(Prediction{.path = path, .width = file.cols, .height = file.rows, .boxes = det});
  }
  return out;
}

namespace {

// The file of `p` with its boxes and "name confidence" labels drawn.
cv::Mat draw_prediction(const Prediction& p, const std::vector<std::string>& names) {
  cv::Mat image = detail::read_bgr(p.path);
  const at::Tensor b = p.boxes.contiguous();
  const auto a = b.accessor<float, 2>();
  for (int64_t i = 0; i < b.size(0); ++i) {
    const int cls = static_cast<int>(a[i][5]);
    const std::string name =
        cls < static_cast<int>(names.size()) ? names[cls] : std::to_string(cls);
    // One colour per class, as Ultralytics' palette cycles through classes.
    const cv::Scalar colour((cls * 67 + 56) % 256, (cls * 151 + 128) % 256, (cls * 37 + 255) % 256);
    const cv::Point p1(static_cast<int>(a[i][0]), static_cast<int>(a[i][1]));
    const cv::Point p2(static_cast<int>(a[i][2]), static_cast<int>(a[i][3]));
    cv::rectangle(image, p1, p2, colour, 2);
    cv::putText(image, fmt::format("{} {:.2f}", name, a[i][4]), p1 + cv::Point(0, -3),
                cv::FONT_HERSHEY_SIMPLEX, 0.4, colour, 1);
  }
  return image;
}

void write_image(const std::string& path, const cv::Mat& image) {
  if (!cv::imwrite(path, image)) throw Error(fmt::format("detect: cannot write '{}'", path));
}

}  // namespace

void save_prediction(const Prediction& p, const std::vector<std::string>& names,
                     const std::string& image_out, const std::string& txt_out) {
  std::ofstream txt(txt_out);
  const at::Tensor b = p.boxes.contiguous();
  const auto a = b.accessor<float, 2>();
  const double w = p.width, h = p.height;
  for (int64_t i = 0; i < b.size(0); ++i) {
    txt << fmt::format("{} {:.6f} {:.6f} {:.6f} {:.6f} {:.5f}\n", static_cast<int>(a[i][5]),
                       (a[i][0] + a[i][2]) / 2 / w, (a[i][1] + a[i][3]) / 2 / h,
                       (a[i][2] - a[i][0]) / w, (a[i][3] - a[i][1]) / h, a[i][4]);
  }
  if (!txt) throw Error(fmt::format("detect predict: cannot write '{}'", txt_out));
  write_image(image_out, draw_prediction(p, names));
}

void save_prediction_grid(const std::vector<Prediction>& predictions,
                          const std::vector<std::string>& names, const std::string& image_out,
                          int tile) {
  TANDEM_CHECK(!predictions.empty() && tile > 0,
               "save_prediction_grid: needs predictions and a positive tile size");
  const int n = static_cast<int>(predictions.size());
  const int cols = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int rows = (n + cols - 1) / cols;
  cv::Mat grid(rows * tile, cols * tile, CV_8UC3, cv::Scalar::all(detail::kPadValue));
  for (int i = 0; i < n; ++i) {
    const detail::Letterboxed lb = detail::letterbox(
        detail::resize_long_side(draw_prediction(predictions[i], names), tile, false), tile);
    lb.image.copyTo(grid(cv::Rect((i % cols) * tile, (i / cols) * tile, tile, tile)));
  }
  write_image(image_out, grid);
}

}  // namespace tandem::detect
