// The image caches (cache=ram, cache=disk) give the samples that decoding
// every time gives, and the disk cache's .npy files round-trip and are
// replaced when older than their image.
#include "detect/image_store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <opencv2/imgproc.hpp>

#include "tandem/detect/make_shapes.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::detect {
namespace {

namespace fs = std::filesystem;
using train::testing::TempDir;

DatasetConfig shapes(const TempDir& dir) {
  MakeShapesOptions o;
  o.dir = dir.file("shapes");
  o.train = 6;
  o.val = 1;
  o.imgsz = 64;
  o.seed = 9;
  return load_dataset_config(make_shapes(o).yaml_path);
}

DetectionDataset dataset(const DatasetConfig& config, ImageCache cache) {
  DetectionDatasetOptions o;
  o.imgsz = 96;  // a resize, so that the cache holds resized images
  o.augment = true;
  o.seed = 4;
  o.cache = cache;
  return DetectionDataset(config, Split::kTrain, o);
}

TEST(ImageStore, CachesGiveTheSamplesOfDecodingEveryTime) {
  TempDir dir;
  const DatasetConfig config = shapes(dir);
  const DetectionDataset off = dataset(config, ImageCache::kOff);
  const DetectionDataset ram = dataset(config, ImageCache::kRam);
  const DetectionDataset disk = dataset(config, ImageCache::kDisk);
  for (int64_t epoch : {0, 1}) {  // epoch 1 reads what epoch 0 cached
    for (int64_t i = 0; i < off.size(); ++i) {
      const DetectionSample want = off.get(i, epoch);
      for (const DetectionDataset* d : {&ram, &disk}) {
        const DetectionSample got = d->get(i, epoch);
        EXPECT_TRUE(got.image.equal(want.image)) << "sample " << i << " epoch " << epoch;
        EXPECT_TRUE(got.labels.equal(want.labels)) << "sample " << i << " epoch " << epoch;
      }
    }
  }
  for (const auto& r : off.records()) {
    EXPECT_TRUE(fs::exists(detail::npy_path(r.image))) << r.image;
  }
}

TEST(ImageStore, NpyRoundTripsAndStaleFilesAreReplaced) {
  TempDir dir;
  cv::Mat image(5, 7, CV_8UC3);
  cv::randu(image, 0, 256);
  const std::string path = dir.file("a.npy");
  detail::write_npy(path, image);
  cv::Mat back = detail::read_npy(path);
  ASSERT_EQ(back.size(), image.size());
  EXPECT_EQ(cv::norm(back, image, cv::NORM_INF), 0);
  // NumPy's layout: a 64-byte-aligned header, then the pixels.
  EXPECT_EQ((fs::file_size(path) - 5 * 7 * 3) % 64, 0u);
  train::testing::truncate_by(path, 1);
  EXPECT_TRUE(detail::read_npy(path).empty()) << "a truncated file is not used";
  EXPECT_TRUE(detail::read_npy(dir.file("none.npy")).empty());

  // A .npy older than its image is decoded again and rewritten.
  const DatasetConfig config = shapes(dir);
  const DetectionDataset off = dataset(config, ImageCache::kOff);
  const std::string first = off.records()[0].image;
  cv::Mat wrong(64, 64, CV_8UC3, cv::Scalar(1, 2, 3));
  detail::write_npy(detail::npy_path(first), wrong);
  fs::last_write_time(detail::npy_path(first),
                      fs::last_write_time(first) - std::chrono::seconds(10));
  const DetectionDataset disk = dataset(config, ImageCache::kDisk);
  EXPECT_TRUE(disk.get(0, 0).image.equal(off.get(0, 0).image));
  EXPECT_GE(fs::last_write_time(detail::npy_path(first)), fs::last_write_time(first));
}

}  // namespace
}  // namespace tandem::detect
