// `tandem detect make-shapes`: the tool writes the data set the library
// describes, and its flag checks name the flag and exit with 2.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "tandem/detect/dataset_config.h"
#include "tests/support/command.h"

namespace {

namespace fs = std::filesystem;

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";

TEST(TandemDetect, MakeShapesWritesALoadableDataSet) {
  const fs::path dir =
      fs::temp_directory_path() / ("tandem_detect_shapes_" + std::to_string(getpid()));
  fs::remove_all(dir);
  auto r = tandem::testing::run_command(kTandem + " detect make-shapes " + dir.string() +
                                        " --train 5 --val 3 --imgsz 64 --seed 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("wrote 8 images"), std::string::npos) << r.output;
  auto config = tandem::detect::load_dataset_config((dir / "shapes.yaml").string());
  EXPECT_EQ(config.names.size(), 4u);
  EXPECT_EQ(tandem::detect::list_image_files(config, tandem::detect::Split::kTrain).size(), 5u);
  EXPECT_EQ(tandem::detect::list_image_files(config, tandem::detect::Split::kVal).size(), 3u);
  fs::remove_all(dir);
}

TEST(TandemDetect, MakeShapesRejectsBadFlags) {
  auto small = tandem::testing::run_command(kTandem + " detect make-shapes /tmp/x --imgsz 8");
  EXPECT_EQ(small.exit_code, 2) << small.output;
  EXPECT_NE(small.output.find("--imgsz"), std::string::npos) << small.output;
  auto none =
      tandem::testing::run_command(kTandem + " detect make-shapes /tmp/x --train 0 --val 0");
  EXPECT_EQ(none.exit_code, 2) << none.output;
  EXPECT_NE(none.output.find("--train and --val"), std::string::npos) << none.output;
  auto missing = tandem::testing::run_command(kTandem + " detect make-shapes");
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
}

}  // namespace
