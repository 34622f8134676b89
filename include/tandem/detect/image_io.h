// Image files for detection: decoding JPEG, PNG and BMP (grayscale, colour or
// with alpha, any size) into RGB tensors, and writing tensors back as image
// files. OpenCV does the work behind this header; callers see only tensors.
// Thread-safe: the functions keep no state. Nothing here is collective.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace tandem::detect {

// Decodes the image file at `path` into a uint8 [H, W, 3] RGB tensor.
// Grayscale images are replicated into three channels; an alpha channel is
// dropped. Throws tandem::InvalidArgument naming `path` and the reason when
// the file is missing, empty or cannot be decoded.
at::Tensor read_image(const std::string& path);

// Writes a uint8 [H, W, C] tensor (C = 1: gray, 3: RGB, 4: RGBA) to `path`;
// the format follows the extension (.jpg/.jpeg, .png, .bmp). Throws
// tandem::InvalidArgument for another shape, dtype or extension, or when the
// file cannot be written.
void write_image(const std::string& path, const at::Tensor& image);

// True for the extensions read_image decodes (.jpg .jpeg .png .bmp, any case).
bool is_image_file(const std::string& path);

}  // namespace tandem::detect
