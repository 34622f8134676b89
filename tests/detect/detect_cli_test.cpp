// The key=value commands behind `tandem detect train|val|predict`: usage
// errors are InvalidArgument naming the key or the command (the tool exits
// 2); the commands themselves run in tests/tools/.
#include "tandem/detect/detect_cli.h"

#include <gtest/gtest.h>

#include <sstream>

#include "tandem/core/error.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::detect {
namespace {

using train::testing::expect_error;

TEST(DetectCli, UsageErrorsNameTheKeyOrCommand) {
  std::ostringstream out;
  expect_error<InvalidArgument>([&] { run_detect_command("fit", {}, out); },
                                {"unknown command 'fit'", "train, val, predict"});
  expect_error<InvalidArgument>([&] { run_detect_command("val", {"model=a.ckpt"}, out); },
                                {"data="});
  expect_error<InvalidArgument>(
      [&] {
        run_detect_command("val", {"model=a.ckpt", "data=d.yaml", "imgsz=big"}, out);
      },
      {"imgsz=big", "whole number"});
  expect_error<InvalidArgument>(
      [&] {
        run_detect_command("predict", {"source=x", "cnf=1"}, out);
      },
      {"unknown key 'cnf'", "conf"});
  expect_error<InvalidArgument>([&] { run_detect_command("train", {"epochs=1"}, out); }, {"data="});
  EXPECT_TRUE(out.str().empty());
  for (const auto& command : detect_commands()) {
    EXPECT_FALSE(detect_command_help(command).empty()) << command;
  }
  EXPECT_NE(detect_command_help("train").find("workers"), std::string::npos);
}

}  // namespace
}  // namespace tandem::detect
