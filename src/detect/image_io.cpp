#include "tandem/detect/image_io.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <vector>

#include "detect/cv_tensor.h"
#include "tandem/core/check.h"

namespace tandem::detect {
namespace {

std::string lower_extension(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

}  // namespace

bool is_image_file(const std::string& path) {
  const std::string ext = lower_extension(path);
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

namespace detail {

cv::Mat read_bgr(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TANDEM_CHECK(in.good(), "image '{}': cannot open the file", path);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  TANDEM_CHECK(!bytes.empty(), "image '{}': the file is empty", path);
  cv::Mat decoded;
  try {
    decoded = cv::imdecode(bytes, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    TANDEM_CHECK(false, "image '{}': cannot decode it ({})", path, e.what());
  }
  TANDEM_CHECK(!decoded.empty(), "image '{}': cannot decode it (corrupt or not an image)", path);
  if (decoded.depth() != CV_8U) {
    // 16-bit PNGs: scale to 8 bits.
    cv::Mat eight;
    decoded.convertTo(eight, CV_8U, decoded.depth() == CV_16U ? 1.0 / 257.0 : 1.0);
    decoded = eight;
  }
  switch (decoded.channels()) {
    case 1:
      cv::cvtColor(decoded, decoded, cv::COLOR_GRAY2BGR);
      break;
    case 3:
      break;
    case 4:
      cv::cvtColor(decoded, decoded, cv::COLOR_BGRA2BGR);
      break;
    default:
      TANDEM_CHECK(false, "image '{}': {} channels are not supported (1, 3 or 4)", path,
                   decoded.channels());
  }
  return decoded;
}

}  // namespace detail

at::Tensor read_image(const std::string& path) {
  cv::Mat rgb;
  cv::cvtColor(detail::read_bgr(path), rgb, cv::COLOR_BGR2RGB);
  return detail::mat_to_tensor(rgb);
}

void write_image(const std::string& path, const at::Tensor& image) {
  TANDEM_CHECK(is_image_file(path), "write_image '{}': the extension must be .jpg, .png or .bmp",
               path);
  cv::Mat mat = detail::tensor_to_mat(image);
  if (mat.channels() == 3) cv::cvtColor(mat, mat, cv::COLOR_RGB2BGR);
  if (mat.channels() == 4) cv::cvtColor(mat, mat, cv::COLOR_RGBA2BGRA);
  bool ok = false;
  try {
    ok = cv::imwrite(path, mat);
  } catch (const cv::Exception& e) {
    TANDEM_CHECK(false, "write_image '{}': {}", path, e.what());
  }
  TANDEM_CHECK(ok, "write_image '{}': cannot write the file (does its folder exist?)", path);
}

}  // namespace tandem::detect
