#include "tandem/detect/label_file.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tandem/core/error.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::detect {
namespace {

using train::testing::TempDir;

std::string write(const TempDir& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir.file(name)) << text;
  return dir.file(name);
}

TEST(LabelFile, ReadsRowsAndDropsDuplicates) {
  TempDir dir;
  auto path = write(dir, "a.txt", "0 0.5 0.5 0.2 0.4\n2 0.1 0.2 0.1 0.1\n\n0 0.5 0.5 0.2 0.4\n");
  LabelCheck c = check_label_file(path, 3);
  EXPECT_TRUE(c.error.empty()) << c.error;
  ASSERT_EQ(c.boxes.size(), 2u);
  EXPECT_EQ(c.boxes[1].cls, 2);
  EXPECT_FLOAT_EQ(c.boxes[0].h, 0.4f);
  EXPECT_EQ(c.duplicates, 1);
  EXPECT_FALSE(c.empty);
  EXPECT_FALSE(c.missing);
}

TEST(LabelFile, MissingAndEmptyFilesMeanNoObjects) {
  TempDir dir;
  LabelCheck missing = check_label_file(dir.file("none.txt"), 2);
  EXPECT_TRUE(missing.missing);
  EXPECT_TRUE(missing.error.empty());
  LabelCheck empty = check_label_file(write(dir, "e.txt", ""), 2);
  EXPECT_TRUE(empty.empty);
  EXPECT_TRUE(empty.error.empty());
  EXPECT_TRUE(empty.boxes.empty());
}

TEST(LabelFile, RejectsBadRowsWithTheReason) {
  TempDir dir;
  struct Case {
    std::string text, words;
  };
  const std::vector<Case> cases = {
      {"3 0.5 0.5 0.1 0.1\n", "class 3 is outside 0..2"},
      {"-1 0.5 0.5 0.1 0.1\n", "class -1"},
      {"0.5 0.5 0.5 0.1 0.1\n", "class 0.5"},
      {"0 1.2 0.5 0.1 0.1\n", "coordinate 1.2 is outside 0-1"},
      {"0 0.5 0.5 0.1 -0.1\n", "coordinate -0.1"},
      {"0 0.5 0.5 0.1\n", "4 columns, expected 5"},
      {"0 0.5 0.5 0.1 0.1 0.3\n", "6 columns"},
      {"0 0.5 zero 0.1 0.1\n", "'zero' is not a number"},
      {"0 0.5 0.5 0.1 0.1\n1 nan 0.5 0.1 0.1\n", "line 2"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    LabelCheck c = check_label_file(write(dir, std::to_string(i) + ".txt", cases[i].text), 3);
    EXPECT_NE(c.error.find(cases[i].words), std::string::npos)
        << "case " << i << ": '" << c.error << "'";
    EXPECT_TRUE(c.boxes.empty());
  }
  EXPECT_THROW(check_label_file(dir.file("x.txt"), 0), InvalidArgument);
}

}  // namespace
}  // namespace tandem::detect
