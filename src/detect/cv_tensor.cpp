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
  // BGR -> RGB by flipping the channel dimension, then HWC -> CHW.
  return mat_to_tensor(bgr).flip({2}).permute({2, 0, 1}).contiguous().to(at::kFloat).div_(255.0);
}

}  // namespace tandem::detect::detail
