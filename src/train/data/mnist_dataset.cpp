#include "tandem/train/data/mnist_dataset.h"

#include <ATen/ops/empty.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>

#include "tandem/core/error.h"
#include "train/data/binary_file.h"

namespace tandem::train {
namespace {

constexpr uint32_t kImagesMagic = 2051;
constexpr uint32_t kLabelsMagic = 2049;
constexpr int64_t kMnistClasses = 10;

// Checks an IDX header (magic, then `dims` big-endian sizes) against the file
// length and returns the sizes.
std::vector<int64_t> read_idx_header(const std::vector<uint8_t>& bytes, const std::string& path,
                                     uint32_t magic, int dims) {
  const size_t header_bytes = 4 * static_cast<size_t>(1 + dims);
  if (bytes.size() < header_bytes) {
    throw Error(fmt::format("MNIST file '{}': truncated header ({} bytes, expected at least {})",
                            path, bytes.size(), header_bytes));
  }
  const uint32_t got_magic = detail::read_be_u32(bytes.data());
  if (got_magic != magic) {
    throw Error(fmt::format("MNIST file '{}': wrong magic number {} (expected {} for an {} file)",
                            path, got_magic, magic, dims == 3 ? "idx3-ubyte" : "idx1-ubyte"));
  }
  std::vector<int64_t> sizes;
  for (int d = 0; d < dims; ++d) sizes.push_back(detail::read_be_u32(bytes.data() + 4 * (d + 1)));
  // A corrupt header's dims (up to 2^32 - 1 each) can multiply past int64:
  // checked, never wrapped.
  int64_t payload = 1;
  int64_t expected = 0;
  bool overflow = false;
  for (int64_t s : sizes) overflow = overflow || __builtin_mul_overflow(payload, s, &payload);
  overflow =
      overflow || __builtin_add_overflow(payload, static_cast<int64_t>(header_bytes), &expected);
  if (overflow) {
    throw Error(fmt::format(
        "MNIST file '{}': corrupt header: the dims [{}] describe more bytes than a file can hold",
        path, fmt::join(sizes, ", ")));
  }
  if (static_cast<int64_t>(bytes.size()) != expected) {
    throw Error(fmt::format(
        "MNIST file '{}': size mismatch: the header promises {} bytes but the file has {}{}", path,
        expected, bytes.size(),
        static_cast<int64_t>(bytes.size()) < expected ? " (truncated)" : ""));
  }
  return sizes;
}

}  // namespace

MnistDataset::MnistDataset(const std::string& images_path, const std::string& labels_path)
    : images_path_(images_path) {
  const auto image_bytes = detail::read_file_bytes(images_path, "MNIST images");
  const auto label_bytes = detail::read_file_bytes(labels_path, "MNIST labels");
  const auto image_sizes = read_idx_header(image_bytes, images_path, kImagesMagic, 3);
  const auto label_sizes = read_idx_header(label_bytes, labels_path, kLabelsMagic, 1);
  const int64_t n = image_sizes[0];
  if (n != label_sizes[0]) {
    throw Error(
        fmt::format("MNIST: image/label count mismatch: '{}' holds {} images but '{}' "
                    "holds {} labels",
                    images_path, n, labels_path, label_sizes[0]));
  }
  if (n == 0) throw Error(fmt::format("MNIST file '{}': holds no images", images_path));
  images_ = at::empty({n, 1, image_sizes[1], image_sizes[2]}, at::kByte);
  std::memcpy(images_.data_ptr<uint8_t>(), image_bytes.data() + 16,
              static_cast<size_t>(images_.numel()));
  labels_ = at::empty({n}, at::kLong);
  auto* labels = labels_.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = label_bytes[static_cast<size_t>(8 + i)];
    if (labels[i] >= kMnistClasses) {
      throw Error(
          fmt::format("MNIST file '{}': label {} is {} (expected 0-{}); is this an MNIST "
                      "label file?",
                      labels_path, i, labels[i], kMnistClasses - 1));
    }
  }
}

Example MnistDataset::get(int64_t index) const {
  detail::check_index(*this, index);
  return {images_[index].to(at::kFloat).div_(255.0), labels_[index].clone()};
}

std::string MnistDataset::describe() const {
  return fmt::format("MNIST '{}' ({} images)", images_path_, size());
}

}  // namespace tandem::train
