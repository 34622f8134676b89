// `tandem lab converge`: one small run per strategy end to end (a row and a
// JSON line each, the target judged), and its flag checks.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "tests/support/command.h"

namespace {

using tandem::testing::CommandResult;

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";

CommandResult run(const std::string& args) {
  return tandem::testing::run_command(kTandem + " " + args, 170);
}

TEST(LabConverge, EveryStrategyReachesAnEasyTargetAndWritesItsLine) {
  const auto json = std::filesystem::temp_directory_path() /
                    ("tandem_lab_converge_test_" + std::to_string(::getpid()) + ".jsonl");
  const CommandResult r =
      run("lab converge --model mlp --dataset-size 512 --lr 0.01 --strategy "
          "ddp,ps,easgd,gossip,local-sgd "
          "--workers 1,2 --target-loss 1.5 --max-steps 200 --eval-every 5 --json " +
          json.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("gossip on 1 worker: skipped"), std::string::npos) << r.output;
  std::ifstream in(json);
  std::set<std::string> seen;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    seen.insert(j["strategy"].get<std::string>() + "-" + std::to_string(j["workers"].get<int>()));
    EXPECT_TRUE(j["reached"].get<bool>()) << line;
    EXPECT_LE(j["final_loss"].get<double>(), 1.5) << line;
    EXPECT_GT(j["steps"].get<int64_t>(), 0) << line;
    EXPECT_EQ(j["samples"].get<int64_t>(), 32 * j["steps"].get<int64_t>()) << line;
    EXPECT_FALSE(j["curve"].empty()) << line;
  }
  EXPECT_EQ(seen.size(), 9u) << r.output;  // 5 strategies x 2, less gossip on 1
  std::filesystem::remove(json);
}

TEST(LabConverge, BadInputIsOneLineNamingTheFlag) {
  for (const auto& [args, words] : std::vector<std::pair<std::string, std::string>>{
           {"lab converge --strategy zero3", "--strategy: 'zero3' is not one of"},
           {"lab converge --workers 0", "--workers"},
           {"lab converge --max-steps 0", "--max-steps must be at least 1"},
           {"lab converge --profile /nonexistent.json", "give --profile and --cluster together"},
           {"lab converge --target-on rank3", "--target-on"}}) {
    const CommandResult r = run(args);
    EXPECT_NE(r.exit_code, 0) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(words), std::string::npos) << args << "\n" << r.output;
  }
}

}  // namespace
