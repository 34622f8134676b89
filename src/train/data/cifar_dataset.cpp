#include "tandem/train/data/cifar_dataset.h"

#include <ATen/ops/empty.h>

#include <cstring>

#include "tandem/core/check.h"
#include "train/data/binary_file.h"

namespace tandem::train {
namespace {

constexpr int64_t kPixelBytes = kCifarRecordBytes - 1;

// Reads one batch file and checks it is a whole, non-empty number of records
// with valid labels.
std::vector<uint8_t> read_batch(const std::string& path) {
  auto bytes = detail::read_file_bytes(path, "CIFAR-10 batch");
  const auto size = static_cast<int64_t>(bytes.size());
  if (size == 0) throw Error(fmt::format("CIFAR-10 batch '{}': the file is empty", path));
  if (size % kCifarRecordBytes != 0) {
    throw Error(fmt::format(
        "CIFAR-10 batch '{}': size mismatch: {} bytes is not a whole number of {}-byte records "
        "(truncated after record {})",
        path, size, kCifarRecordBytes, size / kCifarRecordBytes));
  }
  for (int64_t r = 0; r < size / kCifarRecordBytes; ++r) {
    const uint8_t label = bytes[static_cast<size_t>(r * kCifarRecordBytes)];
    if (label >= kCifarClasses) {
      throw Error(
          fmt::format("CIFAR-10 batch '{}': record {} has label {} (expected 0-9); is "
                      "this a CIFAR-100 file?",
                      path, r, label));
    }
  }
  return bytes;
}

}  // namespace

CifarDataset::CifarDataset(const std::vector<std::string>& paths) : paths_(paths) {
  TANDEM_CHECK(!paths.empty(), "CifarDataset: no batch files given");
  std::vector<std::vector<uint8_t>> files;
  int64_t n = 0;
  for (const auto& path : paths) {
    files.push_back(read_batch(path));
    n += static_cast<int64_t>(files.back().size()) / kCifarRecordBytes;
  }
  images_ = at::empty({n, 3, 32, 32}, at::kByte);
  labels_ = at::empty({n}, at::kLong);
  auto* pixels = images_.data_ptr<uint8_t>();
  auto* labels = labels_.data_ptr<int64_t>();
  int64_t i = 0;
  for (const auto& bytes : files) {
    for (size_t offset = 0; offset < bytes.size(); offset += kCifarRecordBytes, ++i) {
      labels[i] = bytes[offset];
      std::memcpy(pixels + i * kPixelBytes, bytes.data() + offset + 1, kPixelBytes);
    }
  }
}

Example CifarDataset::get(int64_t index) const {
  detail::check_index(*this, index);
  return {images_[index].to(at::kFloat).div_(255.0), labels_[index].clone()};
}

std::string CifarDataset::describe() const {
  return fmt::format("CIFAR-10 '{}'{} ({} images)", paths_.front(),
                     paths_.size() > 1 ? fmt::format(" and {} more", paths_.size() - 1) : "",
                     size());
}

}  // namespace tandem::train
