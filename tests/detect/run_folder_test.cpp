#include "tandem/detect/run_folder.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tandem/core/error.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::detect {
namespace {

namespace fs = std::filesystem;

TEST(RunFolder, NumbersRunsAsUltralytics) {
  train::testing::TempDir dir;
  const std::string project = dir.file("runs");
  EXPECT_EQ(next_run_dir(project, "train", false), project + "/train");
  RunFolder first(next_run_dir(project, "train", false));
  EXPECT_TRUE(fs::is_directory(project + "/train/weights"));
  EXPECT_EQ(next_run_dir(project, "train", false), project + "/train2");
  RunFolder second(next_run_dir(project, "train", false));
  EXPECT_EQ(next_run_dir(project, "train", false), project + "/train3");
  EXPECT_EQ(next_run_dir(project, "train", true), project + "/train");
  EXPECT_EQ(second.weights("last"), project + "/train2/weights/last.ckpt");
  EXPECT_EQ(run_dir_of_checkpoint(second.weights("best")), project + "/train2");
}

TEST(RunFolder, ResultsCsvHasHeaderThenRows) {
  train::testing::TempDir dir;
  RunFolder f(dir.file("r"));
  f.append_results({1, 0.5, 0.25, 0.125});
  f.append_results({2, 0.4, 0.2, 0.1});
  std::ifstream in(dir.file("r/results.csv"));
  std::string header;
  std::getline(in, header);
  EXPECT_EQ(header, kResultsHeader);
  const auto rows = f.read_results();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1][0], 2);
  EXPECT_DOUBLE_EQ(rows[0][3], 0.125);
}

TEST(RunFolder, NewestLastCheckpoint) {
  train::testing::TempDir dir;
  EXPECT_THROW(newest_last_checkpoint(dir.file("none")), InvalidArgument);
  RunFolder a(dir.file("p/train"));
  std::ofstream(a.weights("last")) << "x";
  EXPECT_EQ(newest_last_checkpoint(dir.file("p")), a.weights("last"));
}

}  // namespace
}  // namespace tandem::detect
