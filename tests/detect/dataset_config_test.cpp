#include "tandem/detect/dataset_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tandem/core/error.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::detect {
namespace {

namespace fs = std::filesystem;
using train::testing::expect_error;
using train::testing::TempDir;

void touch(const fs::path& p) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << "x";
}

std::string write_yaml(const TempDir& dir, const std::string& text) {
  std::ofstream(dir.file("data.yaml")) << text;
  return dir.file("data.yaml");
}

TEST(DatasetConfig, ListOrMapOfNamesAndPathRelativeToTheYaml) {
  TempDir dir;
  auto list = load_dataset_config(
      write_yaml(dir,
                 "path: sub\ntrain: images/train\nval: [images/val, extra.txt]\n"
                 "names: [cat, dog]\n"));
  EXPECT_EQ(list.root, (dir.path() / "sub").string());
  EXPECT_EQ(list.names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(list.train, (std::vector<std::string>{(dir.path() / "sub/images/train").string()}));
  EXPECT_EQ(list.val.size(), 2u);
  EXPECT_TRUE(list.test.empty());
  auto map = load_dataset_config(
      write_yaml(dir, "train: a\nval: b\ntest: c\nnames:\n  1: dog\n  0: cat\n"));
  EXPECT_EQ(map.root, dir.path().string());
  EXPECT_EQ(map.names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(map.test.size(), 1u);
}

TEST(DatasetConfig, BadFilesNameTheFileAndKey) {
  TempDir dir;
  expect_error<InvalidArgument>([&] { load_dataset_config(dir.file("nope.yaml")); },
                                {"nope.yaml", "no such file"});
  expect_error<InvalidArgument>(
      [&] { load_dataset_config(write_yaml(dir, "train: a\nnames: [x]\n")); },
      {"data.yaml", "'val' is missing"});
  expect_error<InvalidArgument>(
      [&] { load_dataset_config(write_yaml(dir, "train: a\nval: b\nnames: []\n")); }, {"names"});
  expect_error<InvalidArgument>(
      [&] { load_dataset_config(write_yaml(dir, "train: a\nval: b\nnames: {0: a, 2: c}\n")); },
      {"class 1 is missing"});
  expect_error<InvalidArgument>([&] { load_dataset_config(write_yaml(dir, "train: [a\n")); },
                                {"not valid YAML"});
}

TEST(DatasetConfig, FoldersListsAndFilesOfImages) {
  TempDir dir;
  touch(dir.path() / "images/train/b.jpg");
  touch(dir.path() / "images/train/sub/a.PNG");
  touch(dir.path() / "images/train/notes.md");
  touch(dir.path() / "images/val/v.bmp");
  touch(dir.path() / "other/x.jpeg");
  std::ofstream(dir.file("list.txt")) << "./other/x.jpeg\n\n"
                                      << (dir.path() / "images/val/v.bmp").string() << "\n";
  auto config = load_dataset_config(
      write_yaml(dir, "train: [images/train, list.txt]\nval: images/val/v.bmp\nnames: [a]\n"));
  auto train = list_image_files(config, Split::kTrain);
  ASSERT_EQ(train.size(), 4u);
  EXPECT_NE(train[0].find("images/train/b.jpg"), std::string::npos);
  EXPECT_NE(train[1].find("images/train/sub/a.PNG"), std::string::npos);
  EXPECT_EQ(list_image_files(config, Split::kVal).size(), 1u);
  expect_error<InvalidArgument>([&] { list_image_files(config, Split::kTest); }, {"no 'test'"});
  auto missing = load_dataset_config(write_yaml(dir, "train: gone\nval: gone\nnames: [a]\n"));
  expect_error<InvalidArgument>([&] { list_image_files(missing, Split::kTrain); },
                                {"train entry", "gone", "does not exist"});
}

TEST(DatasetConfig, LabelsSitBesideImagesUnderLabels) {
  EXPECT_EQ(label_path_for("/d/images/train/a.jpg"), "/d/labels/train/a.txt");
  // Only the last "images" folder changes.
  EXPECT_EQ(label_path_for("/images/x/images/val/b.png"), "/images/x/labels/val/b.txt");
  EXPECT_EQ(label_path_for("/d/pics/c.bmp"), "/d/pics/c.txt");
  EXPECT_EQ(parse_split("val"), Split::kVal);
  EXPECT_THROW(parse_split("valid"), InvalidArgument);
}

}  // namespace
}  // namespace tandem::detect
