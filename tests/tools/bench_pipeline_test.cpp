// `tandem bench pipeline` end to end on a small grid: one JSON line per
// (schedule, micro-batch count) with the theoretical bubble, a measured
// bubble per stage, 1F1B's bound on micro-batches in flight, the CSV, and
// traces whose spans on each stage follow the schedule. The measured
// bubble's agreement with theory is the benchmark's to report, not
// asserted here (timing in unit tests would be flaky).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tandem/parallel/pipeline_schedule.h"
#include "tandem/train/choices.h"
#include "tests/support/command.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

TEST(TandemBenchPipeline, WritesBubblesAndTracesThatFollowTheSchedule) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("bench-pipeline-{}", getpid());
  fs::create_directories(dir);
  const std::string out = (dir / "out").string();
  const std::string traces = (dir / "traces").string();
  auto r = testing::run_command(std::string(TANDEM_BINARY_DIR) +
                                    "/tools/tandem bench pipeline --stages 2 --micro-batches 4 "
                                    "--forward-ms 1 --backward-ms 2 --steps 1 --rounds 1 --out " +
                                    out + " --trace-dir " + traces,
                                120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(out + ".jsonl");
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["stages"], 2);
    EXPECT_EQ(j["micro_batches"], 4);
    EXPECT_DOUBLE_EQ(j["theoretical_bubble"].get<double>(), 0.2);
    ASSERT_EQ(j["bubble_per_stage"].size(), 2u) << line;
    for (const auto& b : j["bubble_per_stage"]) {
      EXPECT_GT(b.get<double>(), 0.0) << line;
      EXPECT_LT(b.get<double>(), 1.0) << line;
    }
    const bool gpipe = train::parse_choice<train::PipelineSchedule>(
                           j["schedule"].get<std::string>()) == train::PipelineSchedule::kGPipe;
    EXPECT_EQ(j["max_in_flight_per_stage"][0].get<int>(), gpipe ? 4 : 2) << line;
  }
  EXPECT_EQ(lines, 2);
  EXPECT_TRUE(fs::exists(out + ".csv"));
  for (const std::string schedule : {"gpipe", "1f1b"}) {
    for (int stage = 0; stage < 2; ++stage) {
      std::ifstream trace(fmt::format("{}/p2_{}_m4/rank-{}.json", traces, schedule, stage));
      ASSERT_TRUE(trace.good()) << schedule << " stage " << stage;
      std::vector<std::string> order;
      const auto events = nlohmann::json::parse(trace)["traceEvents"];
      for (const auto& e : events) {
        const std::string name = e["name"];
        if (name[0] == 'F' || name[0] == 'B') order.push_back(name);
      }
      std::vector<std::string> want;
      for (const auto& a : parallel::pipeline_schedule(
               train::parse_choice<train::PipelineSchedule>(schedule), stage, 2, 4)) {
        want.push_back(fmt::format("{}{}", a.forward ? 'F' : 'B', a.micro_batch));
      }
      EXPECT_EQ(order, want) << schedule << " stage " << stage;
    }
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tandem
