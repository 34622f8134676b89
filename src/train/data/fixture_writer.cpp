#include "tandem/train/data/fixture_writer.h"

#include <ATen/ops/stack.h>

#include <filesystem>
#include <numeric>

#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/train/data/cifar_dataset.h"
#include "train/data/binary_file.h"

namespace tandem::train {
namespace {

std::string shape(const at::Tensor& t) { return fmt::format("[{}]", fmt::join(t.sizes(), ", ")); }
std::string dtype(const at::Tensor& t) { return c10::toString(t.scalar_type()); }

// Pixel bytes of `images`, row-major: uint8 as is, floating point in [0, 1]
// scaled by 255 and rounded.
std::vector<uint8_t> pixel_bytes(const at::Tensor& images, const std::string& path) {
  at::Tensor bytes;
  if (images.scalar_type() == at::kByte) {
    bytes = images.contiguous();
  } else {
    TANDEM_CHECK(at::isFloatingType(images.scalar_type()),
                 "fixture '{}': images must be uint8 or floating point (got {})", path,
                 dtype(images));
    bytes = images.to(at::kDouble).mul(255.0).round().clamp(0, 255).to(at::kByte).contiguous();
  }
  const auto* p = bytes.data_ptr<uint8_t>();
  return {p, p + bytes.numel()};
}

std::vector<int64_t> label_values(const at::Tensor& labels, int64_t n, int64_t max_label,
                                  const std::string& path) {
  TANDEM_CHECK(labels.dim() == 1 && labels.size(0) == n,
               "fixture '{}': labels must be 1-D with {} entries (got shape {})", path, n,
               shape(labels));
  TANDEM_CHECK(!at::isFloatingType(labels.scalar_type()),
               "fixture '{}': labels must be integral (got {})", path, dtype(labels));
  at::Tensor l = labels.to(at::kLong).contiguous();
  std::vector<int64_t> values(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + n);
  for (int64_t v : values) {
    TANDEM_CHECK(v >= 0 && v <= max_label, "fixture '{}': label {} is outside [0, {}]", path, v,
                 max_label);
  }
  return values;
}

// Stacks samples [first, first + count) of `source`.
Example stack_range(const Dataset& source, int64_t first, int64_t count) {
  TANDEM_CHECK(count >= 1 && first + count <= source.size(),
               "fixture: need samples [{}, {}) but {} has {}", first, first + count,
               source.describe(), source.size());
  std::vector<int64_t> indices(static_cast<size_t>(count));
  std::iota(indices.begin(), indices.end(), first);
  return source.batch(indices);
}

}  // namespace

void write_mnist_idx(const std::string& images_path, const std::string& labels_path,
                     const at::Tensor& images, const at::Tensor& labels) {
  at::Tensor im = images.dim() == 4 && images.size(1) == 1 ? images.squeeze(1) : images;
  TANDEM_CHECK(im.dim() == 3,
               "fixture '{}': MNIST images must be [N, H, W] or [N, 1, H, W] (got {})", images_path,
               shape(images));
  const int64_t n = im.size(0);
  const auto values = label_values(labels, n, 255, labels_path);
  std::vector<uint8_t> out;
  detail::append_be_u32(out, 2051);
  for (int d = 0; d < 3; ++d) detail::append_be_u32(out, static_cast<uint32_t>(im.size(d)));
  const auto pixels = pixel_bytes(im, images_path);
  out.insert(out.end(), pixels.begin(), pixels.end());
  detail::write_file_bytes(images_path, out);

  out.clear();
  detail::append_be_u32(out, 2049);
  detail::append_be_u32(out, static_cast<uint32_t>(n));
  for (int64_t v : values) out.push_back(static_cast<uint8_t>(v));
  detail::write_file_bytes(labels_path, out);
}

void write_cifar_batch(const std::string& path, const at::Tensor& images,
                       const at::Tensor& labels) {
  TANDEM_CHECK(
      images.dim() == 4 && images.size(1) == 3 && images.size(2) == 32 && images.size(3) == 32,
      "fixture '{}': CIFAR-10 images must be [N, 3, 32, 32] (got {})", path, shape(images));
  const int64_t n = images.size(0);
  const auto values = label_values(labels, n, kCifarClasses - 1, path);
  const auto pixels = pixel_bytes(images, path);
  constexpr size_t kPixels = kCifarRecordBytes - 1;
  std::vector<uint8_t> out;
  out.reserve(static_cast<size_t>(n * kCifarRecordBytes));
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(static_cast<uint8_t>(values[static_cast<size_t>(i)]));
    const auto* record = pixels.data() + static_cast<size_t>(i) * kPixels;
    out.insert(out.end(), record, record + kPixels);
  }
  detail::write_file_bytes(path, out);
}

void write_token_file(const std::string& path, const at::Tensor& tokens) {
  TANDEM_CHECK(tokens.dim() == 1 && !at::isFloatingType(tokens.scalar_type()),
               "fixture '{}': tokens must be a 1-D integral tensor (got {} {})", path,
               dtype(tokens), shape(tokens));
  at::Tensor t = tokens.to(at::kLong).contiguous();
  const int64_t* p = t.data_ptr<int64_t>();
  std::vector<uint8_t> out;
  out.reserve(static_cast<size_t>(2 * t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    TANDEM_CHECK(p[i] >= 0 && p[i] <= 65535, "fixture '{}': token {} at {} is outside [0, 65535]",
                 path, p[i], i);
    out.push_back(static_cast<uint8_t>(p[i] & 0xFF));
    out.push_back(static_cast<uint8_t>(p[i] >> 8));
  }
  detail::write_file_bytes(path, out);
}

std::vector<std::string> write_mnist_dir(const std::string& dir, const Dataset& source,
                                         int64_t count) {
  std::filesystem::create_directories(dir);
  const Example all = stack_range(source, 0, count);
  const std::string images = (std::filesystem::path(dir) / "train-images-idx3-ubyte").string();
  const std::string labels = (std::filesystem::path(dir) / "train-labels-idx1-ubyte").string();
  write_mnist_idx(images, labels, all.input, all.target);
  return {images, labels};
}

std::vector<std::string> write_cifar_dir(const std::string& dir, const Dataset& source,
                                         int64_t count, int num_files) {
  TANDEM_CHECK(num_files >= 1 && num_files <= count,
               "fixture '{}': num_files must be in [1, count={}] (got {})", dir, count, num_files);
  std::filesystem::create_directories(dir);
  std::vector<std::string> paths;
  int64_t first = 0;
  for (int f = 0; f < num_files; ++f) {
    const int64_t n = count / num_files + (f < count % num_files ? 1 : 0);
    const Example part = stack_range(source, first, n);
    paths.push_back(
        (std::filesystem::path(dir) / fmt::format("data_batch_{}.bin", f + 1)).string());
    write_cifar_batch(paths.back(), part.input, part.target);
    first += n;
  }
  return paths;
}

}  // namespace tandem::train
