// MnistDataset: MNIST (or Fashion-MNIST) read from its IDX files, an
// idx3-ubyte image file (magic 2051, big-endian count, rows, cols, then one
// byte per pixel) and an idx1-ubyte label file (magic 2049, count, one byte
// per label). Both files are read whole at construction. Immutable afterwards,
// so thread-safe. Not collective.
#pragma once

#include <cstdint>
#include <string>

#include "tandem/train/data/dataset.h"

namespace tandem::train {

class MnistDataset : public Dataset {
 public:
  // Reads and checks both files. Throws tandem::Error naming the file and the
  // problem for a missing or unreadable file, a wrong magic number, header
  // dims whose product overflows, a length that disagrees with the header,
  // image and label counts that differ, or a label above 9 (naming its index
  // and value).
  MnistDataset(const std::string& images_path, const std::string& labels_path);

  int64_t size() const override { return images_.size(0); }
  // input: float32 [1, rows, cols] in [0, 1]; target: int64 scalar label.
  Example get(int64_t index) const override;
  std::string describe() const override;

 private:
  std::string images_path_;
  at::Tensor images_;  // uint8 [N, 1, rows, cols]
  at::Tensor labels_;  // int64 [N]
};

}  // namespace tandem::train
