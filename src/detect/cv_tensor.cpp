#include "detect/cv_tensor.h"

#include <ATen/ops/empty.h>

#include <cstring>

#include "tandem/core/check.h"

namespace tandem::detect::detail {

cv::Mat tensor_to_mat(const at::Tensor& image) {
  TANDEM_CHECK(image.dim() == 3 && image.scalar_type() == at::kByte &&
                   (image.size(2) == 1 || image.size(2) == 3 || image.size(2) == 4),
               "expected a uint8 [H, W, C] image with C = 1, 3 or 4, got {} of shape [{}]",
               c10::toString(image.scalar_type()), fmt::join(image.sizes(), ", "));
  at::Tensor c = image.contiguous();
  const int channels = static_cast<int>(c.size(2));
  cv::Mat mat(static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), CV_8UC(channels));
  std::memcpy(mat.data, c.data_ptr<uint8_t>(), c.numel());
  return mat;
}

at::Tensor mat_to_tensor(const cv::Mat& mat) {
  TANDEM_ASSERT(mat.depth() == CV_8U, "expected an 8-bit image, got depth {}", mat.depth());
  cv::Mat c = mat.isContinuous() ? mat : mat.clone();
  at::Tensor t = at::empty({c.rows, c.cols, c.channels()}, at::kByte);
  std::memcpy(t.data_ptr<uint8_t>(), c.data, t.numel());
  return t;
}

at::Tensor bgr_to_chw_float(const cv::Mat& bgr) {
  TANDEM_ASSERT(bgr.type() == CV_8UC3, "expected an 8-bit BGR image, got type {}", bgr.type());
  // A plain loop rather than ATen's flip/permute/div: the loader's worker
  // threads call this, and ATen ops there would start intra-op thread teams
  // beside the training thread's (see detection_loader.h).
  const int h = bgr.rows, w = bgr.cols;
  at::Tensor out = at::empty({3, h, w}, at::kFloat);
  float* dst = out.data_ptr<float>();
  const int64_t plane = static_cast<int64_t>(h) * w;
  for (int y = 0; y < h; ++y) {
    const uint8_t* row = bgr.ptr<uint8_t>(y);
    for (int x = 0; x < w; ++x) {
      const int64_t i = static_cast<int64_t>(y) * w + x;
      for (int c = 0; c < 3; ++c) {
        dst[c * plane + i] = static_cast<float>(row[3 * x + 2 - c]) / 255.0f;
      }
    }
  }
  return out;
}

}  // namespace tandem::detect::detail
