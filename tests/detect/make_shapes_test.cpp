#include "tandem/detect/make_shapes.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "tandem/core/error.h"
#include "tandem/detect/dataset_config.h"
#include "tandem/detect/label_cache.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::detect {
namespace {

namespace fs = std::filesystem;
using train::testing::expect_error;
using train::testing::read_all;
using train::testing::TempDir;

MakeShapesOptions small(const std::string& dir, uint64_t seed) {
  MakeShapesOptions o;
  o.dir = dir;
  o.train = 8;
  o.val = 4;
  o.imgsz = 64;
  o.seed = seed;
  return o;
}

TEST(MakeShapes, WritesAValidUltralyticsLayout) {
  TempDir dir;
  MakeShapesResult r = make_shapes(small(dir.file("shapes"), 1));
  EXPECT_EQ(r.images, 12);
  EXPECT_EQ(r.yaml_path, dir.file("shapes/shapes.yaml"));
  EXPECT_TRUE(fs::exists(dir.file("shapes/images/train/000000.jpg")));
  EXPECT_TRUE(fs::exists(dir.file("shapes/images/train/000003.png")));
  EXPECT_TRUE(fs::exists(dir.file("shapes/labels/val/000003.txt")));
  DatasetConfig config = load_dataset_config(r.yaml_path);
  EXPECT_EQ(config.names, (std::vector<std::string>{"circle", "square", "triangle", "cross"}));
  for (Split split : {Split::kTrain, Split::kVal}) {
    LabelScan scan = scan_labels(list_image_files(config, split), 4, false);
    EXPECT_TRUE(scan.report.skipped.empty());
    EXPECT_EQ(scan.report.missing_labels, 0);
    int64_t objects = 0;
    for (const auto& rec : scan.records) {
      EXPECT_EQ(rec.height, 64);
      EXPECT_GE(rec.boxes.size(), 1u) << rec.image;
      EXPECT_LE(rec.boxes.size(), 6u) << rec.image;
      objects += static_cast<int64_t>(rec.boxes.size());
      for (const auto& b : rec.boxes) {
        EXPECT_GT(b.w, 0.05f);
        EXPECT_LT(b.w, 0.6f);
      }
    }
    EXPECT_GT(objects, static_cast<int64_t>(scan.records.size()));
  }
  EXPECT_GT(r.objects, 12);
}

TEST(MakeShapes, TheSameSeedWritesTheSameBytes) {
  TempDir dir;
  make_shapes(small(dir.file("a"), 5));
  make_shapes(small(dir.file("b"), 5));
  make_shapes(small(dir.file("c"), 6));
  for (const char* f :
       {"images/train/000002.jpg", "images/val/000003.png", "labels/train/000005.txt"}) {
    EXPECT_EQ(read_all(dir.file(std::string("a/") + f)), read_all(dir.file(std::string("b/") + f)))
        << f;
  }
  EXPECT_NE(read_all(dir.file("a/images/train/000002.jpg")),
            read_all(dir.file("c/images/train/000002.jpg")));
}

TEST(MakeShapes, RejectsBadOptions) {
  TempDir dir;
  auto o = small(dir.file("x"), 0);
  o.imgsz = 16;
  expect_error<InvalidArgument>([&] { make_shapes(o); }, {"--imgsz", "16"});
  o = small(dir.file("x"), 0);
  o.train = o.val = 0;
  expect_error<InvalidArgument>([&] { make_shapes(o); }, {"--train", "--val"});
  o = small("", 0);
  EXPECT_THROW(make_shapes(o), InvalidArgument);
}

}  // namespace
}  // namespace tandem::detect
