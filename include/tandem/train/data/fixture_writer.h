// Writers for tiny files in the real data formats (MNIST IDX, CIFAR-10 binary
// batches, uint16 token files), from tensors or from any dataset. Tests use
// them to build fixtures; a CLI hook can expose them. Not thread-safe with
// respect to the files written; not collective. Each writer replaces the file
// and throws tandem::Error naming the file if it cannot be written, or
// tandem::InvalidArgument naming the bad argument.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/train/data/dataset.h"

namespace tandem::train {

// images: uint8 [N, H, W] or [N, 1, H, W], or floating point in [0, 1]
// (scaled by 255 and rounded); labels: integral [N] in [0, 255].
void write_mnist_idx(const std::string& images_path, const std::string& labels_path,
                     const at::Tensor& images, const at::Tensor& labels);

// images: uint8 or floating point in [0, 1], [N, 3, 32, 32]; labels: integral
// [N] in [0, 9]. Writes one batch file.
void write_cifar_batch(const std::string& path, const at::Tensor& images, const at::Tensor& labels);

// tokens: integral [N] in [0, 65535], written as little-endian uint16.
void write_token_file(const std::string& path, const at::Tensor& tokens);

// Writes samples [0, count) of an image dataset (MNIST-shaped [1, H, W]) as
// train-images-idx3-ubyte / train-labels-idx1-ubyte in `dir` (created if
// missing). Returns the two paths.
std::vector<std::string> write_mnist_dir(const std::string& dir, const Dataset& source,
                                         int64_t count);

// Writes samples [0, count) of a CIFAR-shaped dataset as data_batch_1.bin ...
// data_batch_<num_files>.bin in `dir`, split as evenly as possible. Returns
// the paths.
std::vector<std::string> write_cifar_dir(const std::string& dir, const Dataset& source,
                                         int64_t count, int num_files);

}  // namespace tandem::train
