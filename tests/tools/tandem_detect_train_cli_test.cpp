// `tandem detect train ... device=0,1`: the command re-launches itself with
// two ranks, writes the run folder, resume continues a run from its
// checkpoint, and `val` and `predict` use the weights; the key checks name
// the key and exit with 2.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tandem/detect/run_folder.h"
#include "tandem/detect/yolo_checkpoint.h"
#include "tests/support/command.h"

namespace {

namespace fs = std::filesystem;

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";

struct TempFolder {
  fs::path path = fs::temp_directory_path() / ("tandem_detect_train_" + std::to_string(getpid()));
  TempFolder() { fs::remove_all(path); }
  ~TempFolder() { fs::remove_all(path); }
};

TEST(TandemDetectTrain, TwoDevicesWriteTheRunFolderAndResume) {
  TempFolder tmp;
  const std::string data = (tmp.path / "shapes").string();
  auto made = tandem::testing::run_command(kTandem + " detect make-shapes " + data +
                                           " --train 8 --val 4 --imgsz 64 --seed 1");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  const std::string project = (tmp.path / "runs").string();
  const std::string common = " detect train model=yolo-n data=" + data +
                             "/shapes.yaml imgsz=64 batch=4 device=0,1 project=" + project;
  auto r = tandem::testing::run_command(kTandem + common + " epochs=2 --save_period 1", 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("over 2 rank(s)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("2/2"), std::string::npos) << "progress of epoch 2\n" << r.output;
  const fs::path run = fs::path(project) / "train";
  tandem::detect::RunFolder folder(run.string());
  ASSERT_EQ(folder.read_results().size(), 2u) << r.output;
  EXPECT_EQ(folder.read_results()[1][0], 2);
  for (const auto* f : {"weights/last.ckpt", "weights/best.ckpt", "weights/epoch1.ckpt",
                        "args.yaml", "results.csv"}) {
    EXPECT_TRUE(fs::exists(run / f)) << f;
  }
  EXPECT_EQ(
      tandem::detect::read_yolo_checkpoint((run / "weights/last.ckpt").string()).meta.epochs_done,
      2);

  // A run stopped after epoch 1: its folder as it was then.
  const fs::path stopped = fs::path(project) / "stopped";
  fs::create_directories(stopped / "weights");
  fs::copy_file(run / "weights/epoch1.ckpt", stopped / "weights/last.ckpt");
  {
    std::ifstream in(run / "results.csv");
    std::ofstream out(stopped / "results.csv");
    std::string line;
    for (int i = 0; i < 2 && std::getline(in, line); ++i) out << line << "\n";
  }
  auto resumed = tandem::testing::run_command(
      kTandem + " detect train resume=" + (stopped / "weights/last.ckpt").string() + " device=0,1",
      300);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("Resuming from epoch 2"), std::string::npos) << resumed.output;
  tandem::detect::RunFolder again(stopped.string());
  ASSERT_EQ(again.read_results().size(), 2u) << resumed.output;
  EXPECT_EQ(again.read_results()[1][0], 2);
  EXPECT_EQ(tandem::detect::read_yolo_checkpoint((stopped / "weights/last.ckpt").string())
                .meta.epochs_done,
            2);
  EXPECT_FALSE(fs::exists(fs::path(project) / "train2")) << "resume writes into its own run";

  // The trained weights evaluate and predict.
  const std::string best = (run / "weights/best.ckpt").string();
  auto val = tandem::testing::run_command(kTandem + " detect val model=" + best + " data=" + data +
                                          "/shapes.yaml imgsz=64 batch=4");
  ASSERT_EQ(val.exit_code, 0) << val.output;
  EXPECT_NE(val.output.find("mAP50-95"), std::string::npos) << val.output;
  EXPECT_NE(val.output.find("all          4"), std::string::npos) << "4 val images\n" << val.output;
  auto predict =
      tandem::testing::run_command(kTandem + " detect predict model=" + best + " source=" + data +
                                   "/images/val imgsz=64 conf=0.001 project=" + project);
  ASSERT_EQ(predict.exit_code, 0) << predict.output;
  EXPECT_NE(predict.output.find("4 images"), std::string::npos) << predict.output;
  const fs::path out = fs::path(project) / "predict";
  int images = 0, labels = 0;
  for (const auto& e : fs::directory_iterator(out)) images += e.is_regular_file() ? 1 : 0;
  for (const auto& e : fs::directory_iterator(out / "labels")) {
    labels += e.path().extension() == ".txt" ? 1 : 0;
  }
  EXPECT_EQ(images, 4);
  EXPECT_EQ(labels, 4);
}

// `tandem ARGS` exits with 2 and says each of `words`; returns its output.
std::string expect_usage_error(const std::string& args, const std::vector<std::string>& words) {
  auto r = tandem::testing::run_command(kTandem + " " + args);
  EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
  for (const auto& w : words) {
    EXPECT_NE(r.output.find(w), std::string::npos) << args << ": no '" << w << "' in\n" << r.output;
  }
  return r.output;
}

TEST(TandemDetectTrain, BadKeysExitWithUsageErrors) {
  expect_usage_error("detect train data=x.yaml epochz=3", {"unknown key 'epochz'", "close_mosaic"});
  expect_usage_error("detect train data=x.yaml batch=5 device=0,1", {"batch=5"});
  expect_usage_error("detect train epochs=1", {"data="});
  const std::string no_yaml = expect_usage_error("detect train data=/nonexistent/x.yaml device=0,1",
                                                 {"/nonexistent/x.yaml"});
  EXPECT_EQ(no_yaml.find("rank"), std::string::npos) << "no rank was started\n" << no_yaml;
  expect_usage_error("detect predict model=yolo-n source=/tmp", {"no trained weights"});
  expect_usage_error("detect val model=x.ckpt confx=1", {"unknown key 'confx'"});
}

}  // namespace
