#include "tandem/detect/detection_dataset.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/full.h>
#include <ATen/ops/randint.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "tandem/core/error.h"
#include "tandem/detect/collate.h"
#include "tandem/detect/image_io.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::detect {
namespace {

namespace fs = std::filesystem;
using train::testing::expect_error;
using train::testing::TempDir;

at::Tensor noise(int64_t h, int64_t w, int64_t c) {
  return at::randint(0, 256, {h, w, c}, at::kByte);
}

void write_label(const TempDir& dir, const std::string& stem, const std::string& text) {
  std::ofstream(dir.file("labels/train/" + stem + ".txt")) << text;
}

// Every bad input the issue names, beside good files:
//   good.jpg (colour, 64x48), gray.png (1 channel), alpha.png (4 channels),
//   empty.jpg (empty label file), nolabel.bmp (no label file) -> used;
//   corrupt.jpg (not an image), badclass.jpg (class 5 of 2), bigcoord.jpg
//   (x = 1.5), columns.jpg (4 columns) -> skipped, each named.
std::string make_bad_input_set(const TempDir& dir) {
  fs::create_directories(dir.path() / "images/train");
  fs::create_directories(dir.path() / "labels/train");
  at::manual_seed(0);
  write_image(dir.file("images/train/good.jpg"), noise(48, 64, 3));
  write_label(dir, "good", "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.2 0.2\n");
  write_image(dir.file("images/train/gray.png"), noise(40, 40, 1));
  write_label(dir, "gray", "1 0.5 0.5 0.4 0.4\n");
  write_image(dir.file("images/train/alpha.png"), noise(32, 50, 4));
  write_label(dir, "alpha", "0 0.5 0.5 0.3 0.6\n");
  write_image(dir.file("images/train/empty.jpg"), noise(30, 30, 3));
  write_label(dir, "empty", "");
  write_image(dir.file("images/train/nolabel.bmp"), noise(30, 20, 3));
  std::ofstream(dir.file("images/train/corrupt.jpg")) << "this is not a JPEG";
  write_label(dir, "corrupt", "0 0.5 0.5 0.5 0.5\n");
  write_image(dir.file("images/train/badclass.jpg"), noise(30, 30, 3));
  write_label(dir, "badclass", "5 0.5 0.5 0.5 0.5\n");
  write_image(dir.file("images/train/bigcoord.jpg"), noise(30, 30, 3));
  write_label(dir, "bigcoord", "0 1.5 0.5 0.5 0.5\n");
  write_image(dir.file("images/train/columns.jpg"), noise(30, 30, 3));
  write_label(dir, "columns", "0 0.5 0.5 0.5\n");
  std::ofstream(dir.file("data.yaml")) << "train: images/train\nval: images/train\n"
                                       << "names: [a, b]\n";
  return dir.file("data.yaml");
}

bool skipped(const ScanReport& r, const std::string& name, const std::string& why) {
  return std::any_of(r.skipped.begin(), r.skipped.end(), [&](const auto& s) {
    return s.first.find(name) != std::string::npos && s.second.find(why) != std::string::npos;
  });
}

TEST(DetectionDataset, BadFilesAreNamedSkippedAndCounted) {
  TempDir dir;
  auto config = load_dataset_config(make_bad_input_set(dir));
  DetectionDatasetOptions o;
  o.imgsz = 64;
  DetectionDataset data(config, Split::kTrain, o);
  const ScanReport& r = data.report();
  EXPECT_EQ(r.images, 9);
  EXPECT_EQ(data.size(), 5);
  EXPECT_EQ(r.usable, 5);
  ASSERT_EQ(r.skipped.size(), 4u);
  EXPECT_TRUE(skipped(r, "images/train/corrupt.jpg", "corrupt image"));
  EXPECT_TRUE(skipped(r, "labels/train/badclass.txt", "class 5 is outside 0..1"));
  EXPECT_TRUE(skipped(r, "labels/train/bigcoord.txt", "coordinate 1.5"));
  EXPECT_TRUE(skipped(r, "labels/train/columns.txt", "4 columns"));
  EXPECT_EQ(r.missing_labels, 1);
  EXPECT_EQ(r.empty_labels, 1);
  EXPECT_NE(describe(r).find("4 skipped"), std::string::npos) << describe(r);
  // Every usable image loads, whatever its channels, as a 64x64 RGB sample.
  int64_t objects = 0;
  for (int64_t i = 0; i < data.size(); ++i) {
    DetectionSample s = data.get(i);
    EXPECT_EQ(s.image.sizes(), (at::IntArrayRef{3, 64, 64})) << s.path;
    EXPECT_GE(s.image.min().item<float>(), 0.f);
    EXPECT_LE(s.image.max().item<float>(), 1.f);
    objects += s.labels.size(0);
  }
  EXPECT_EQ(objects, 4);
}

TEST(DetectionDataset, LetterboxKeepsLabelsOnTheirObjects) {
  TempDir dir;
  auto config = load_dataset_config(make_bad_input_set(dir));
  DetectionDatasetOptions o;
  o.imgsz = 64;
  DetectionDataset data(config, Split::kTrain, o);
  // good.jpg is 64x48: letterboxed into 64x64 with 8 rows of padding above and
  // below. Its box (0.5, 0.5, 0.5, 0.5) becomes (0.5, 0.5, 0.5, 0.375).
  for (int64_t i = 0; i < data.size(); ++i) {
    DetectionSample s = data.get(i);
    if (s.path.find("good.jpg") == std::string::npos) continue;
    EXPECT_EQ(s.orig_h, 48);
    EXPECT_EQ(s.orig_w, 64);
    EXPECT_DOUBLE_EQ(s.pad_y, 8.0);
    EXPECT_NEAR(s.labels[0][1].item<float>(), 0.5, 1e-6);
    EXPECT_NEAR(s.labels[0][2].item<float>(), 0.5, 1e-6);
    EXPECT_NEAR(s.labels[0][4].item<float>(), 0.375, 1e-6);
    // The padding is the gray 114.
    EXPECT_NEAR(s.image[0][0][0].item<float>(), 114.0 / 255, 1e-6);
    return;
  }
  FAIL() << "good.jpg was not loaded";
}

TEST(DetectionDataset, TheLabelCacheIsReusedUntilAFileChanges) {
  TempDir dir;
  auto config = load_dataset_config(make_bad_input_set(dir));
  DetectionDatasetOptions o;
  o.imgsz = 64;
  DetectionDataset first(config, Split::kTrain, o);
  EXPECT_FALSE(first.report().from_cache);
  EXPECT_TRUE(fs::exists(dir.file("labels/train.cache")));
  DetectionDataset second(config, Split::kTrain, o);
  EXPECT_TRUE(second.report().from_cache);
  EXPECT_EQ(second.size(), first.size());
  EXPECT_EQ(second.report().skipped, first.report().skipped);
  EXPECT_EQ(second.records()[0].boxes, first.records()[0].boxes);
  // A fixed label file invalidates the cache.
  write_label(dir, "badclass", "1 0.5 0.5 0.5 0.5\n1 0.5 0.5 0.1 0.1\n");
  DetectionDataset third(config, Split::kTrain, o);
  EXPECT_FALSE(third.report().from_cache);
  EXPECT_EQ(third.size(), 6);
}

TEST(DetectionDataset, AugmentedSamplesAreDeterministicAndValid) {
  TempDir dir;
  auto config = load_dataset_config(make_bad_input_set(dir));
  DetectionDatasetOptions o;
  o.imgsz = 64;
  o.augment = true;
  o.cache_labels = false;
  o.seed = 7;
  DetectionDataset data(config, Split::kTrain, o);
  EXPECT_TRUE(data.report().cache_path.empty());
  for (bool mosaic : {true, false}) {
    data.set_mosaic(mosaic);
    for (int64_t i = 0; i < data.size(); ++i) {
      DetectionSample a = data.get(i, 3), b = data.get(i, 3);
      EXPECT_TRUE(a.image.equal(b.image));
      EXPECT_TRUE(a.labels.equal(b.labels));
      ASSERT_EQ(a.image.sizes(), (at::IntArrayRef{3, 64, 64}));
      if (a.labels.size(0) > 0) {
        // Centres and sizes stay normalised, boxes inside the sample.
        EXPECT_GE(a.labels.narrow(1, 1, 4).min().item<float>(), 0.f);
        EXPECT_LE(a.labels.narrow(1, 1, 4).max().item<float>(), 1.f);
      }
    }
  }
  // Another epoch draws differently.
  EXPECT_FALSE(data.get(0, 3).image.equal(data.get(0, 4).image));
}

TEST(DetectionDataset, CollateStacksImagesAndIndexesTargets) {
  TempDir dir;
  auto config = load_dataset_config(make_bad_input_set(dir));
  DetectionDatasetOptions o;
  o.imgsz = 64;
  DetectionDataset data(config, Split::kTrain, o);
  std::vector<DetectionSample> samples;
  int64_t objects = 0;
  for (int64_t i = 0; i < data.size(); ++i) {
    samples.push_back(data.get(i));
    objects += samples.back().labels.size(0);
  }
  DetectionBatch batch = collate(samples);
  EXPECT_EQ(batch.images.sizes(), (at::IntArrayRef{5, 3, 64, 64}));
  ASSERT_EQ(batch.targets.sizes(), (at::IntArrayRef{objects, 6}));
  // Column 0 names the image of each row.
  for (int64_t r = 0; r < objects; ++r) {
    const int64_t image = static_cast<int64_t>(batch.targets[r][0].item<float>());
    EXPECT_GT(samples[image].labels.size(0), 0);
  }
  EXPECT_THROW(collate({}), InvalidArgument);
  std::vector<DetectionSample> mixed = {data.get(0), data.get(1)};
  mixed[1].image = mixed[1].image.narrow(1, 0, 32);
  expect_error<InvalidArgument>([&] { collate(mixed); }, {"sample 1", "[3, 32, 64]"});
}

TEST(DetectionDataset, RejectsBadOptionsAndEmptySplits) {
  TempDir dir;
  auto config = load_dataset_config(make_bad_input_set(dir));
  DetectionDatasetOptions o;
  o.imgsz = 100;
  expect_error<InvalidArgument>([&] { DetectionDataset(config, Split::kTrain, o); },
                                {"imgsz", "multiple of 32", "100"});
  o.imgsz = 64;
  o.aug.fliplr = 1.5;
  expect_error<InvalidArgument>([&] { DetectionDataset(config, Split::kTrain, o); },
                                {"fliplr", "1.5"});
  // A split whose every file is bad.
  fs::create_directories(dir.path() / "bad/images");
  std::ofstream(dir.file("bad/images/x.jpg")) << "junk";
  std::ofstream(dir.file("bad.yaml")) << "train: bad/images\nval: bad/images\nnames: [a]\n";
  o.aug.fliplr = 0.5;
  expect_error<InvalidArgument>(
      [&] { DetectionDataset(load_dataset_config(dir.file("bad.yaml")), Split::kTrain, o); },
      {"no usable image"});
}

TEST(ImageIo, ReadsEveryChannelLayoutAsRgbAndNamesBadFiles) {
  TempDir dir;
  auto gray = at::full({5, 7, 1}, 200, at::kByte);
  write_image(dir.file("g.png"), gray);
  auto rgb = read_image(dir.file("g.png"));
  EXPECT_EQ(rgb.sizes(), (at::IntArrayRef{5, 7, 3}));
  EXPECT_EQ(rgb.min().item<uint8_t>(), 200);
  auto rgba = at::full({4, 4, 4}, 10, at::kByte);
  rgba.select(2, 0).fill_(250);  // red
  write_image(dir.file("a.png"), rgba);
  auto back = read_image(dir.file("a.png"));
  EXPECT_EQ(back[0][0][0].item<uint8_t>(), 250);
  EXPECT_EQ(back[0][0][2].item<uint8_t>(), 10);
  std::ofstream(dir.file("bad.jpg")) << "no";
  expect_error<InvalidArgument>([&] { read_image(dir.file("bad.jpg")); },
                                {"bad.jpg", "cannot decode"});
  expect_error<InvalidArgument>([&] { read_image(dir.file("none.png")); }, {"none.png"});
  EXPECT_THROW(write_image(dir.file("x.gif"), rgb), InvalidArgument);
  EXPECT_TRUE(is_image_file("A.JPEG"));
  EXPECT_FALSE(is_image_file("a.txt"));
}

}  // namespace
}  // namespace tandem::detect
