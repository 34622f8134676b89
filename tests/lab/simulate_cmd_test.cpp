// `tandem simulate` as the user runs it: a profile and a cluster in, a table,
// JSON lines, a trace and a plot out; every malformed input refused with one
// line naming the file and the field (exit 2).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/support/command.h"

namespace {

using tandem::testing::CommandResult;

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";

CommandResult run(const std::string& args) {
  return tandem::testing::run_command(kTandem + " " + args, 120);
}

class SimulateCmd : public ::testing::Test {
 protected:
  std::filesystem::path dir_ = std::filesystem::temp_directory_path() /
                               ("tandem_simulate_cmd_test_" + std::to_string(::getpid()));
  void SetUp() override {
    std::filesystem::create_directories(dir_);
    const CommandResult r = run("profile --model mlp --batch-size 8 --warmup 1 --steps 3 --out " +
                                path("p.json"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    write("c.yaml",
          "name: test\nnodes: {devices_per_node: 4}\nnetwork: {bandwidth_gbps: 1}\n"
          "failures: {mttf_node_hours: 100}\n");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path(name)) << text;
  }
  std::string simulate(const std::string& more) const {
    return "simulate --profile " + path("p.json") + " --cluster " + path("c.yaml") + " " + more;
  }
};

TEST_F(SimulateCmd, PredictsEveryStrategyAndSizeWithJsonTraceAndPlot) {
  const CommandResult r =
      run(simulate("--strategy ddp,zero3,ps,gossip,local-sgd,pipeline --workers 2..16 --json " +
                   path("out.jsonl") + " --trace " + path("t.json") + " --plot " +
                   path("plot.png")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int lines = 0;
  std::ifstream in(path("out.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_GT(j["step_s"].get<double>(), 0) << line;
    EXPECT_GT(j["efficiency"].get<double>(), 0) << line;
    EXPECT_LT(j["goodput_keep_survivors"].get<double>(), 1) << line;
    EXPECT_GE(j["goodput_keep_survivors"].get<double>(), j["goodput_restart_all"].get<double>());
    ++lines;
  }
  // 4 sizes for each of 6 strategies; ps needs more than 1 process (all do
  // here); the pipeline of 2 stages runs on every even size.
  EXPECT_EQ(lines, 24) << r.output;
  const auto trace = nlohmann::json::parse(std::ifstream(path("t.json")));
  EXPECT_GT(trace["traceEvents"].size(), 10u);
  EXPECT_GT(std::filesystem::file_size(path("plot.png")), 1000u);
}

TEST_F(SimulateCmd, BadInputExitsTwoNamingTheField) {
  write("bad.yaml", "nodes: {devices_per_node: 0}\n");
  write("typo.yaml", "network: {bandwith_gbps: 10}\n");
  write("notjson.json", "{ nope");
  nlohmann::json doc = nlohmann::json::parse(std::ifstream(path("p.json")));
  doc["compute"]["model_version"] = "0000000000000000";
  std::ofstream(path("old.json")) << doc.dump();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {simulate("--workers 0"), "--workers takes processes >= 1"},
      {simulate("--workers 8..2"), "the range '8..2' is empty"},
      {simulate("--strategy fsdp"), "fsdp"},
      {"simulate --profile " + path("p.json") + " --cluster " + path("bad.yaml"),
       "key 'nodes.devices_per_node' must be >= 1"},
      {"simulate --profile " + path("p.json") + " --cluster " + path("typo.yaml"),
       "key 'network.bandwith_gbps' is not a key of 'network'"},
      {"simulate --profile " + path("notjson.json") + " --cluster " + path("c.yaml"),
       "notjson.json"},
      {"simulate --profile " + path("old.json") + " --cluster " + path("c.yaml"),
       "field 'model_version' is 0000000000000000"},
      {"simulate --profile " + path("p.json") + " --cluster " + path("missing.yaml"),
       "cannot open the file"},
  };
  for (const auto& [args, words] : cases) {
    const CommandResult r = run(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(words), std::string::npos) << args << "\n" << r.output;
  }
  // A strategy the simulator does not model is a failure (1), said before any row.
  const CommandResult r = run(simulate("--strategy ddp,easgd"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("easgd is not modelled yet"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("step_ms"), std::string::npos) << r.output;
}

}  // namespace
