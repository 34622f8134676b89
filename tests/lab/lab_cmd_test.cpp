// `tandem lab validate`: the table's names, its flag checks, and one real
// case end to end (a run beside its prediction, both written as JSON).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tests/support/command.h"

namespace {

using tandem::testing::CommandResult;

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";

CommandResult run(const std::string& args) {
  return tandem::testing::run_command(kTandem + " " + args, 170);
}

TEST(LabValidate, ListsATableOfAtLeastTwentyCases) {
  const CommandResult r = run("lab validate --list");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream in(r.output);
  int cases = 0;
  for (std::string line; std::getline(in, line);) cases += !line.empty();
  EXPECT_GE(cases, 20) << r.output;
  for (const char* name : {"ddp-4-shm", "zero3-3-shm", "ps-2-shm", "gossip-4-shm", "1f1b-2-shm",
                           "ddp-2-shm-straggler", "ddp-2-veth-200mbit"}) {
    EXPECT_NE(r.output.find(name), std::string::npos) << name;
  }
}

TEST(LabValidate, BadFlagsExitTwo) {
  for (const auto& [args, words] : std::vector<std::pair<std::string, std::string>>{
           {"lab validate --cases nope", "--cases names 'nope', not a case"},
           {"lab validate --cases ddp-2-shm --steps 33", "multiples of 5"},
           {"lab validate --cases ddp-2-shm --rounds 0", "--rounds must be >= 1"}}) {
    const CommandResult r = run(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(words), std::string::npos) << args << "\n" << r.output;
  }
}

TEST(LabValidate, OneCaseRunsBesideItsPrediction) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("tandem_lab_validate_test_" + std::to_string(::getpid()));
  const CommandResult r = run("lab validate --cases ps-2-shm --rounds 1 --steps 30 "
                              "--warmup-steps 10 --batch-size 8 --dir " + dir.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(dir / "validate.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(in, line)) << r.output;
  const auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["case"], "ps-2-shm");
  for (const char* key : {"measured_step_s", "predicted_step_s", "textbook_step_s"}) {
    const double v = j[key].get<double>();
    EXPECT_TRUE(std::isfinite(v) && v > 0) << key << " " << line;
  }
  EXPECT_EQ(j["profile_processes"], 2);
  EXPECT_NE(r.output.find("median |error|"), std::string::npos) << r.output;
  std::filesystem::remove_all(dir);
}

}  // namespace
