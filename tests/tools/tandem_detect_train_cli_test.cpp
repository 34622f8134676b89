// `tandem detect train ... device=0,1`: the command re-launches itself with
// two ranks, writes the run folder, resume continues a run from its
// checkpoint, and `val` and `predict` use the weights; the key checks name
// the key and exit with 2.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

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

TEST(TandemDetectTrain, BadKeysExitWithUsageErrors) {
  auto unknown = tandem::testing::run_command(kTandem + " detect train data=x.yaml epochz=3");
  EXPECT_EQ(unknown.exit_code, 2) << unknown.output;
  EXPECT_NE(unknown.output.find("unknown key 'epochz'"), std::string::npos) << unknown.output;
  EXPECT_NE(unknown.output.find("close_mosaic"), std::string::npos) << unknown.output;
  auto batch =
      tandem::testing::run_command(kTandem + " detect train data=x.yaml batch=5 device=0,1");
  EXPECT_EQ(batch.exit_code, 2) << batch.output;
  EXPECT_NE(batch.output.find("batch=5"), std::string::npos) << batch.output;
  auto missing = tandem::testing::run_command(kTandem + " detect train epochs=1");
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_NE(missing.output.find("data="), std::string::npos) << missing.output;
  auto no_yaml =
      tandem::testing::run_command(kTandem + " detect train data=/nonexistent/x.yaml device=0,1");
  EXPECT_EQ(no_yaml.exit_code, 2) << no_yaml.output;
  EXPECT_NE(no_yaml.output.find("/nonexistent/x.yaml"), std::string::npos) << no_yaml.output;
  EXPECT_EQ(no_yaml.output.find("rank"), std::string::npos) << "no rank was started\n"
                                                            << no_yaml.output;
  auto untrained =
      tandem::testing::run_command(kTandem + " detect predict model=yolo-n source=/tmp");
  EXPECT_EQ(untrained.exit_code, 2) << untrained.output;
  EXPECT_NE(untrained.output.find("no trained weights"), std::string::npos) << untrained.output;
  auto bad_key = tandem::testing::run_command(kTandem + " detect val model=x.ckpt confx=1");
  EXPECT_EQ(bad_key.exit_code, 2) << bad_key.output;
  EXPECT_NE(bad_key.output.find("unknown key 'confx'"), std::string::npos) << bad_key.output;
}

}  // namespace
