// The detection training loop against the single-process computation it
// replaces (DESIGN.md, "Correctness rule"), and on a data set with bad files.
#include "tandem/detect/yolo_trainer.h"

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "tandem/detect/make_shapes.h"
#include "tandem/detect/run_folder.h"
#include "tandem/detect/yolo_checkpoint.h"
#include "tandem/detect/yolo_model.h"
#include "tests/parallel/support/equivalence.h"
#include "tests/support/multiproc.h"
#include "tests/support/rank_init.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::detect {
namespace {

namespace fs = std::filesystem;

std::string make_set(const train::testing::TempDir& dir, int64_t train, int64_t val) {
  MakeShapesOptions o;
  o.dir = dir.file("shapes");
  o.train = train;
  o.val = val;
  o.imgsz = 64;
  o.seed = 3;
  return make_shapes(o).yaml_path;
}

// float64, augmentation off, warmup as configured: three optimizer steps of
// a global batch of 4 over 12 images.
TrainArgs equivalence_args(const std::string& yaml, const std::string& project) {
  TrainArgs a;
  a.data = yaml;
  a.epochs = 1;
  a.imgsz = 64;
  a.batch = 4;
  a.project = project;
  a.hsv_h = a.hsv_s = a.hsv_v = 0;
  a.translate = a.scale = a.fliplr = a.flipud = 0;
  a.mosaic = 0;
  a.dtype = train::Dtype::kFloat64;
  a.sync_bn = true;
  a.plots = false;
  return a;
}

torch::OrderedDict<std::string, at::Tensor> weights_of(const std::string& checkpoint) {
  YoloCheckpoint c = read_yolo_checkpoint(checkpoint);
  torch::OrderedDict<std::string, at::Tensor> out;
  for (const auto& [n, t] : c.file.parameters) out.insert(n, t);
  for (const auto& [n, t] : c.file.buffers) {
    if (at::isFloatingType(t.scalar_type())) out.insert("buffer " + n, t);
  }
  return out;
}

// Trains `one` in this process and the same with device={0, 1} on two
// forked ranks, then compares the saved weights (the EMA of the model; after
// three updates 99.9% the model) and BatchNorm's running statistics.
void expect_two_ranks_equal_one(TrainArgs one, const train::testing::TempDir& dir) {
  one.project = dir.file("one");
  TrainResult r1 = train_yolo(one, dir.file("one/train"), nullptr, nullptr);
  EXPECT_EQ(r1.epochs_done, 1);
  TrainArgs two = one;
  two.project = dir.file("two");
  two.device = {0, 1};
  testing::expect_ranks_succeed(
      2,
      [&](int rank, int size, int port) {
        auto comm = testing::init_rank(rank, size, port);
        TrainResult r = train_yolo(two, dir.file("two/train"), comm, nullptr);
        EXPECT_EQ(r.epochs_done, 1);
        EXPECT_EQ(r.metrics.images, 2) << "validation gathers both ranks' shards";
      },
      testing::MultiprocOptions{.timeout = std::chrono::milliseconds(150'000), .env = {}});
  testing::expect_same_parameters(weights_of(checkpoint_path(dir.file("two/train"), "last")),
                                  weights_of(checkpoint_path(dir.file("one/train"), "last")), 1e-9,
                                  1e-12, "2 ranks x 2 images vs 1 process x 4");
  // The weights moved from their initialisation (the trainer seeds it with
  // args.seed): a comparison of untouched weights would prove nothing.
  at::manual_seed(one.seed);
  YoloModel init(YoloOptions{.scale = YoloScale::kN, .num_classes = 4, .reg_max = 16, .norm = {}});
  double moved = 0;
  auto trained = weights_of(checkpoint_path(dir.file("one/train"), "last"));
  for (const auto& p : init->named_parameters()) {
    moved =
        std::max(moved, (trained[p.key()] - p.value().to(at::kDouble)).abs().max().item<double>());
  }
  EXPECT_GT(moved, 1e-3);
}

// Ultralytics' recipe as it runs at the start of training: warmup (bias
// rate 0.1, weight rates from 0), accumulation ramping from 1 towards the
// nominal batch, gradients clipped at norm 10.
TEST(YoloTrainer, TwoRanksEqualOneProcessWithTheDoubledBatch) {
  train::testing::TempDir dir;
  expect_two_ranks_equal_one(equivalence_args(make_set(dir, 12, 2), ""), dir);
}

// Full-rate steps: no warmup, one optimizer step per batch (nbs = batch)
// and clipping out of reach, which would hide a gradient off by a constant
// factor (the clipped direction is the same).
TEST(YoloTrainer, TwoRanksEqualOneProcessAtFullRate) {
  train::testing::TempDir dir;
  TrainArgs a = equivalence_args(make_set(dir, 12, 2), "");
  a.warmup_epochs = 0;
  a.nbs = a.batch;
  a.max_norm = 1e9;
  expect_two_ranks_equal_one(a, dir);
}

// Ultralytics' bad-input cases in one set: every bad file is skipped and
// named, the odd but valid ones are used, and training runs to the end.
TEST(YoloTrainer, TrainsThroughBadFilesAndNamesThem) {
  train::testing::TempDir dir;
  const std::string yaml = make_set(dir, 8, 2);
  const fs::path images = dir.path() / "shapes/images/train";
  const fs::path labels = dir.path() / "shapes/labels/train";
  std::ofstream(images / "corrupt.jpg") << "\xff\xd8\xff\xe0 not really a jpeg";
  std::ofstream(labels / "corrupt.txt") << "0 0.5 0.5 0.2 0.2\n";
  fs::copy_file(images / "000000.jpg", images / "empty_label.jpg");
  std::ofstream(labels / "empty_label.txt");
  fs::copy_file(images / "000001.jpg", images / "no_label.jpg");
  fs::copy_file(images / "000002.jpg", images / "bad_class.jpg");
  std::ofstream(labels / "bad_class.txt") << "7 0.5 0.5 0.2 0.2\n";
  fs::copy_file(images / "000004.jpg", images / "big_coords.jpg");
  std::ofstream(labels / "big_coords.txt") << "1 0.5 0.5 1.4 0.2\n";
  cv::Mat gray = cv::imread((images / "000005.jpg").string(), cv::IMREAD_GRAYSCALE);
  ASSERT_TRUE(cv::imwrite((images / "gray.png").string(), gray));
  std::ofstream(labels / "gray.txt") << "2 0.5 0.5 0.3 0.3\n";
  cv::Mat bgra;
  cv::cvtColor(cv::imread((images / "000006.jpg").string()), bgra, cv::COLOR_BGR2BGRA);
  ASSERT_TRUE(cv::imwrite((images / "alpha.png").string(), bgra));
  std::ofstream(labels / "alpha.txt") << "3 0.5 0.5 0.3 0.3\n";

  TrainArgs a;
  a.data = yaml;
  a.epochs = 1;
  a.imgsz = 64;
  a.batch = 4;
  a.project = dir.file("runs");
  std::ostringstream out;
  TrainResult r = train_yolo(a, dir.file("runs/train"), nullptr, &out);
  EXPECT_EQ(r.epochs_done, 1);
  // Each skipped file is named: the image for a corrupt image, the label
  // file for a bad label.
  std::vector<std::string> skipped;
  for (const auto& [path, why] : r.skipped) skipped.push_back(fs::path(path).filename());
  std::sort(skipped.begin(), skipped.end());
  EXPECT_EQ(skipped, (std::vector<std::string>{"bad_class.txt", "big_coords.txt", "corrupt.jpg"}));
  for (const auto& name : {"corrupt.jpg", "bad_class.txt", "big_coords.txt"}) {
    EXPECT_NE(out.str().find(name), std::string::npos) << name << " not named in:\n" << out.str();
  }
  EXPECT_NE(out.str().find("3 file(s) skipped"), std::string::npos) << out.str();
  // The 8 generated images plus the empty-label, no-label, gray and alpha ones.
  EXPECT_NE(out.str().find("(12 train / 2 val images"), std::string::npos) << out.str();
  EXPECT_EQ(RunFolder(r.save_dir).read_results().size(), 1u);
  for (const auto& f : {r.last, r.best, r.save_dir + "/results.png", r.save_dir + "/PR_curve.png",
                        r.save_dir + "/args.yaml"}) {
    EXPECT_TRUE(fs::exists(f)) << f;
  }
}

}  // namespace
}  // namespace tandem::detect
