// CifarDataset: CIFAR-10 read from its binary batches (data_batch_1.bin ...
// data_batch_5.bin, test_batch.bin). Each file is a sequence of 3073-byte
// records: one label byte (0-9), then 1024 red, 1024 green and 1024 blue pixel
// bytes, row-major 32x32. All files are read at construction, in the order
// given. Immutable afterwards, so thread-safe. Not collective.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/train/data/dataset.h"

namespace tandem::train {

inline constexpr int64_t kCifarRecordBytes = 1 + 3 * 32 * 32;
inline constexpr int64_t kCifarClasses = 10;

class CifarDataset : public Dataset {
 public:
  // Reads and checks every file. Throws tandem::Error naming the file and the
  // problem for a missing or empty file, a length that is not a whole number
  // of records (truncated), or a label byte above 9; InvalidArgument for an
  // empty list.
  explicit CifarDataset(const std::vector<std::string>& paths);

  int64_t size() const override { return images_.size(0); }
  // input: float32 [3, 32, 32] in [0, 1]; target: int64 scalar label.
  Example get(int64_t index) const override;
  std::string describe() const override;

 private:
  std::vector<std::string> paths_;
  at::Tensor images_;  // uint8 [N, 3, 32, 32]
  at::Tensor labels_;  // int64 [N]
};

}  // namespace tandem::train
