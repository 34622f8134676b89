// Private to src/detect: conversions between cv::Mat and at::Tensor. The
// tensors share no memory with the Mat they came from (each call copies).
#pragma once

#include <ATen/core/Tensor.h>

#include <opencv2/core.hpp>
#include <string>

namespace tandem::detect::detail {

// Decodes the image at `path` as 8-bit BGR (gray replicated, alpha dropped).
// Throws tandem::InvalidArgument naming `path` and the reason on failure.
cv::Mat read_bgr(const std::string& path);

// A uint8 [H, W, C] tensor (C = 1, 3 or 4) as a Mat of the same channels.
cv::Mat tensor_to_mat(const at::Tensor& image);

// An 8-bit Mat (1, 3 or 4 channels) as a uint8 [H, W, C] tensor.
at::Tensor mat_to_tensor(const cv::Mat& mat);

// An 8-bit BGR Mat as a float32 [3, H, W] RGB tensor in [0, 1].
at::Tensor bgr_to_chw_float(const cv::Mat& bgr);

}  // namespace tandem::detect::detail
