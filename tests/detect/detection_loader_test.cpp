// DetectionLoader: background workers give the batches the calling thread
// would (bitwise), a worker's failure reaches the caller naming the file, and
// a loader dropped early or after a failure joins its threads.
#include "tandem/detect/detection_loader.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tandem/core/error.h"
#include "tandem/detect/make_shapes.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::detect {
namespace {

namespace fs = std::filesystem;
using train::testing::expect_error;
using train::testing::TempDir;

DatasetConfig shapes(const TempDir& dir, int64_t train) {
  MakeShapesOptions o;
  o.dir = dir.file("shapes");
  o.train = train;
  o.val = 1;
  o.imgsz = 64;
  o.seed = 5;
  return load_dataset_config(make_shapes(o).yaml_path);
}

DetectionDatasetOptions training(int64_t imgsz) {
  DetectionDatasetOptions o;
  o.imgsz = imgsz;
  o.augment = true;
  o.seed = 11;
  return o;
}

// Batches of 3 over `n` samples in a scrambled order, the last one short.
std::vector<std::vector<int64_t>> batches_of(int64_t n) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t k = 0; k < n; ++k) {
    if (k % 3 == 0) out.emplace_back();
    out.back().push_back((k * 7 + 2) % n);
  }
  return out;
}

std::vector<DetectionBatch> load_all(const DetectionDataset& data, int64_t epoch, int64_t workers) {
  DetectionLoader loader(
      data, batches_of(data.size()), epoch,
      LoaderOptions{
          .workers = workers, .prefetch = 2, .timeout = std::chrono::milliseconds(120'000)});
  std::vector<DetectionBatch> out;
  for (int64_t b = 0; b < loader.size(); ++b) out.push_back(loader.next());
  return out;
}

TEST(DetectionLoader, WorkersGiveTheSameBatchesAsTheCallingThread) {
  TempDir dir;
  DetectionDataset data(shapes(dir, 10), Split::kTrain, training(64));
  for (bool mosaic : {true, false}) {
    data.set_mosaic(mosaic);
    const auto inline_batches = load_all(data, 2, 0);
    const auto threaded = load_all(data, 2, 3);
    ASSERT_EQ(inline_batches.size(), 4u);
    ASSERT_EQ(threaded.size(), 4u);
    for (size_t b = 0; b < threaded.size(); ++b) {
      EXPECT_TRUE(threaded[b].images.equal(inline_batches[b].images)) << "batch " << b;
      EXPECT_TRUE(threaded[b].targets.equal(inline_batches[b].targets)) << "batch " << b;
      EXPECT_EQ(threaded[b].paths, inline_batches[b].paths);
    }
    EXPECT_EQ(threaded.back().images.size(0), 1) << "10 samples in batches of 3";
  }
}

TEST(DetectionLoader, AWorkersFailureNamesTheFileAndStopsTheOthers) {
  TempDir dir;
  DetectionDatasetOptions o = training(64);
  o.augment = false;  // one file per sample
  DetectionDataset data(shapes(dir, 9), Split::kTrain, o);
  const std::string gone = data.records()[4].image;
  fs::remove(gone);
  DetectionLoader loader(
      data, batches_of(9), 0,
      LoaderOptions{.workers = 2, .prefetch = 3, .timeout = std::chrono::milliseconds(120'000)});
  expect_error<InvalidArgument>(
      [&] {
        for (int64_t b = 0; b < loader.size(); ++b) loader.next();
      },
      {gone});
}

TEST(DetectionLoader, StopsWhenDroppedBeforeTheEnd) {
  TempDir dir;
  DetectionDataset data(shapes(dir, 12), Split::kTrain, training(64));
  for (int64_t taken : {0, 1}) {
    DetectionLoader loader(
        data, batches_of(12), 0,
        LoaderOptions{.workers = 3, .prefetch = 1, .timeout = std::chrono::milliseconds(120'000)});
    for (int64_t b = 0; b < taken; ++b) loader.next();
  }  // the destructor joins the workers waiting for room
  SUCCEED();
}

TEST(DetectionLoader, RejectsBadArguments) {
  TempDir dir;
  DetectionDataset data(shapes(dir, 4), Split::kTrain, training(64));
  auto make = [&](std::vector<std::vector<int64_t>> batches, int64_t workers, int64_t prefetch) {
    DetectionLoader(
        data, std::move(batches), 0,
        LoaderOptions{
            .workers = workers, .prefetch = prefetch, .timeout = std::chrono::milliseconds(1000)});
  };
  expect_error<InvalidArgument>([&] { make({{0}}, -1, 2); }, {"workers", "-1"});
  expect_error<InvalidArgument>([&] { make({{0}}, 1, 0); }, {"prefetch"});
  expect_error<InvalidArgument>([&] { make({{0}, {}}, 1, 2); }, {"batch 1"});
  expect_error<InvalidArgument>([&] { make({{0, 4}}, 1, 2); }, {"sample 4"});
  DetectionLoader done(data, {{1}}, 0, LoaderOptions{});
  done.next();
  expect_error<InvalidArgument>([&] { done.next(); }, {"all 1 batches"});
  EXPECT_EQ(loader_workers(0, 2), 0);
  EXPECT_GE(loader_workers(64, 1), 1);
  EXPECT_LE(loader_workers(64, 1), usable_cores());
  EXPECT_THROW(loader_workers(-1, 1), InvalidArgument);
}

}  // namespace
}  // namespace tandem::detect
