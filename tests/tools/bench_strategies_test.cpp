// `tandem bench strategies`: a short run of two strategies writes, per
// strategy, a row without and a row with the straggler to the JSON lines and
// the CSV, with the time and samples to the target; bad flags are named.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/support/command.h"
#include <vector>

namespace {

using tandem::testing::CommandResult;

CommandResult run(const std::string& command) { return tandem::testing::run_command(command, 170); }

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";

TEST(TandemBenchStrategies, WritesARowPerStrategyAndStraggler) {
  const std::string out = "/tmp/tandem-bench-strategies-test-" + std::to_string(getpid());
  // An easy target (noise 0.25) that 30 steps reach.
  CommandResult r = run(kTandem +
                        " bench strategies --strategies ps,local-sgd --steps 30 --data-noise "
                        "0.25 --lr 0.01 --target-loss 1.0 --inject-delay ranks=1,ms=20 --out " +
                        out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(out + ".jsonl");
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 4u) << r.output;
  const std::vector<std::pair<std::string, std::string>> want = {
      {"ps", "none"},
      {"ps", "inject-delay ranks=1,ms=20"},
      {"local-sgd", "none"},
      {"local-sgd", "inject-delay ranks=1,ms=20"}};
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i]["strategy"], want[i].first);
    EXPECT_EQ(rows[i]["straggler"], want[i].second);
    EXPECT_TRUE(rows[i]["ok"].get<bool>());
    ASSERT_TRUE(rows[i]["reached"].get<bool>()) << rows[i].dump();
    EXPECT_GT(rows[i]["time_to_target_s"].get<double>(), 0.0);
    // At least the 10 smoothed steps of rank 0, at most every worker's 30.
    const int64_t samples = rows[i]["samples_to_target"].get<int64_t>();
    EXPECT_GE(samples, 10 * 16);
    EXPECT_LE(samples, rows[i]["samples"].get<int64_t>());
  }
  EXPECT_EQ(rows[0]["samples"].get<int64_t>(), 3 * 30 * 16) << "ps: 3 workers + 1 server";
  EXPECT_EQ(rows[2]["samples"].get<int64_t>(), 4 * 30 * 16);
  std::ifstream csv(out + ".csv");
  int lines = 0;
  for (std::string line; std::getline(csv, line);) ++lines;
  EXPECT_EQ(lines, 5) << "a header and four rows";
  std::remove((out + ".jsonl").c_str());
  std::remove((out + ".csv").c_str());
}

TEST(TandemBenchStrategies, BadFlagsAreNamed) {
  CommandResult r = run(kTandem + " bench strategies --strategies ddp,hogwild");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--strategies hogwild is not one of ddp, ddp-backup, ps, easgd, gossip, "
                          "gossip-pull, local-sgd"),
            std::string::npos)
      << r.output;
  r = run(kTandem + " bench strategies --ranks 1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--ranks must be in [2, 64] (got 1)"), std::string::npos) << r.output;
}

}  // namespace
