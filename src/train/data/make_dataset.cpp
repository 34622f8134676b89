#include "tandem/train/data/make_dataset.h"

#include <algorithm>
#include <filesystem>

#include "tandem/core/check.h"
#include "tandem/train/data/cifar_dataset.h"
#include "tandem/train/data/mnist_dataset.h"
#include "tandem/train/data/synthetic_dataset.h"
#include "tandem/train/data/token_dataset.h"

namespace tandem::train {
namespace {

namespace fs = std::filesystem;

bool is_train(const DatasetOptions& o) { return o.split == DataSplit::kTrain; }

// CIFAR batch files in `dir` for the split, in name order (data_batch_1 ..
// data_batch_5, or test_batch).
std::vector<std::string> cifar_files(const fs::path& dir, const DatasetOptions& o) {
  std::vector<std::string> paths;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool match = is_train(o) ? name.starts_with("data_batch_") && name.ends_with(".bin")
                                   : name == "test_batch.bin";
    if (match && entry.is_regular_file()) paths.push_back(entry.path().string());
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

fs::path mnist_file(const fs::path& dir, const DatasetOptions& o, const char* kind) {
  return dir / fmt::format("{}-{}", is_train(o) ? "train" : "t10k", kind);
}

DataFormat detect_format(const fs::path& path, const DatasetOptions& o) {
  if (fs::is_directory(path)) {
    if (fs::exists(mnist_file(path, o, "images-idx3-ubyte"))) return DataFormat::kMnist;
    if (!cifar_files(path, o).empty()) return DataFormat::kCifar;
  } else if (fs::is_regular_file(path)) {
    const auto ext = path.extension().string();
    if (ext == ".bin" || ext == ".tokens") return DataFormat::kTokens;
  }
  TANDEM_CHECK(fs::exists(path), "--data '{}': no such file or directory", path.string());
  throw InvalidArgument(fmt::format(
      "--data '{}': cannot detect the format: expected a directory holding {} (MNIST) or {} "
      "(CIFAR-10), or a .bin/.tokens token file; or give the format with --data-format "
      "mnist|cifar|tokens",
      path.string(), mnist_file("", o, "images-idx3-ubyte").string(),
      is_train(o) ? "data_batch_*.bin" : "test_batch.bin"));
}

std::unique_ptr<Dataset> make_synthetic(SyntheticKind kind, const DatasetOptions& o) {
  SyntheticOptions s;
  s.kind = kind;
  s.size = o.synthetic_size;
  s.seed = o.seed;
  s.stream = is_train(o) ? 0 : 1;
  s.context = o.context;
  s.vocab_size = o.vocab_size;
  s.noise = o.noise;
  return std::make_unique<SyntheticDataset>(s);
}

}  // namespace

std::unique_ptr<Dataset> make_dataset(const std::string& spec, const DatasetOptions& options) {
  if (spec == "synthetic-mnist") return make_synthetic(SyntheticKind::kMnist, options);
  if (spec == "synthetic-cifar") return make_synthetic(SyntheticKind::kCifar, options);
  if (spec == "synthetic-tokens") return make_synthetic(SyntheticKind::kTokens, options);
  TANDEM_CHECK(!spec.empty(),
               "--data is empty; give a path or synthetic-mnist, synthetic-cifar, "
               "synthetic-tokens");
  const fs::path path(spec);
  const DataFormat format =
      options.format == DataFormat::kAuto ? detect_format(path, options) : options.format;
  switch (format) {
    case DataFormat::kMnist: {
      const fs::path images = mnist_file(path, options, "images-idx3-ubyte");
      TANDEM_CHECK(fs::exists(images), "--data '{}': no MNIST file {} in the directory", spec,
                   images.filename().string());
      return std::make_unique<MnistDataset>(
          images.string(), mnist_file(path, options, "labels-idx1-ubyte").string());
    }
    case DataFormat::kCifar: {
      auto files = fs::is_directory(path) ? cifar_files(path, options)
                                          : std::vector<std::string>{path.string()};
      TANDEM_CHECK(!files.empty(), "--data '{}': no CIFAR-10 batch files ({}) in the directory",
                   spec, is_train(options) ? "data_batch_*.bin" : "test_batch.bin");
      return std::make_unique<CifarDataset>(files);
    }
    case DataFormat::kTokens:
      return std::make_unique<TokenDataset>(spec, options.context, options.vocab_size);
    case DataFormat::kAuto:
      break;
  }
  throw InternalError("make_dataset: format left undetected");
}

}  // namespace tandem::train
