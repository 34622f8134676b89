// `tandem profile` and `tandem profile merge` as the user runs them: bad
// flags exit 2 naming the flag; a run prints its table and writes a profile
// (and a trace) that read back; merge joins compute and links.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tandem/sim/profile.h"
#include "tests/support/command.h"

namespace {

using tandem::testing::CommandResult;

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";

CommandResult run(const std::string& args) {
  return tandem::testing::run_command(kTandem + " " + args, 120);
}

class ProfileCmd : public ::testing::Test {
 protected:
  std::filesystem::path dir_ = std::filesystem::temp_directory_path() /
                               ("tandem_profile_cmd_test_" + std::to_string(::getpid()));
  void SetUp() override { std::filesystem::create_directories(dir_); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
};

TEST_F(ProfileCmd, BadFlagsExitTwoNamingTheFlag) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"profile --batch-size 0", "--batch-size must be >= 1 (got 0)"},
      {"profile --model mlp --steps 0", "--steps must be >= 1 (got 0)"},
      {"profile --model mlp --warmup -1", "--warmup must be >= 0"},
      {"profile --model alexnet", "--model alexnet is not one of mlp, convnet, resnet18"},
      {"profile --model mlp --dtype int8", "--dtype int8 is not one of float32, float64"},
      {"profile --batch-size x", "--batch-size takes whole numbers"},
      {"profile", "--model is required (one of mlp, convnet, resnet18, resnet50, gpt-mini)"},
      {"profile links --ops all_sum", "profile links: --ops must be one of all_reduce"},
      {"profile links --transports tcp", "--transports must be one of shm, gloo, mpi"},
      {"profile links --min-bytes 0", "need 4 <= --min-bytes <= --max-bytes"},
      {"profile links --rounds 0", "--rounds must be >= 1"},
  };
  for (const auto& [args, words] : cases) {
    const CommandResult r = run(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(words), std::string::npos) << args << "\n" << r.output;
  }
}

TEST_F(ProfileCmd, ProfilePrintsATableAndWritesProfileAndTrace) {
  const CommandResult r = run("profile --model mlp --batch-size 8 --warmup 1 --steps 3 --out " +
                              path("p.json") + " --trace " + path("t.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* words : {"fwd_ms", "bwd_ms", "fc0", "fc2", "optimizer"}) {
    EXPECT_NE(r.output.find(words), std::string::npos) << words << "\n" << r.output;
  }
  const tandem::sim::Profile p = tandem::sim::read_profile(path("p.json"));
  ASSERT_TRUE(p.compute);
  EXPECT_EQ(p.compute->model, "mlp");
  EXPECT_EQ(p.compute->batch_size, 8);
  EXPECT_EQ(p.compute->threads, 1);
  EXPECT_EQ(p.compute->layers.size(), 3u);
  EXPECT_TRUE(p.links.empty());
  std::ifstream trace(path("t.json"));
  const auto events = nlohmann::json::parse(trace)["traceEvents"];
  EXPECT_GE(events.size(), 3u * (3 + 3 + 1));
}

TEST_F(ProfileCmd, MergeJoinsComputeAndLinksAndRefusesTwoComputes) {
  tandem::sim::Profile compute;
  compute.compute.emplace();
  compute.compute->model = "mlp";
  compute.compute->dtype = "float32";
  compute.compute->batch_size = 4;
  tandem::sim::Profile links;
  tandem::sim::LinkFit fit;
  fit.points = {{4096, 2e-5}, {16384, 4e-5}};
  tandem::sim::fit_alpha_beta(fit);
  links.links = {fit};
  tandem::sim::write_profile(compute, path("c.json"));
  tandem::sim::write_profile(links, path("l.json"));
  CommandResult r = run("profile merge " + path("c.json") + " " + path("l.json") + " " +
                        path("l.json") + " --out " + path("m.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const tandem::sim::Profile m = tandem::sim::read_profile(path("m.json"));
  ASSERT_TRUE(m.compute);
  EXPECT_EQ(m.links.size(), 2u);
  r = run("profile merge " + path("c.json") + " " + path("m.json") + " --out " + path("x.json"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("both profiles have a compute part"), std::string::npos) << r.output;
  r = run("profile merge " + path("c.json") + " " + path("missing.json") + " --out " +
          path("x.json"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("missing.json"), std::string::npos) << r.output;
}

}  // namespace
