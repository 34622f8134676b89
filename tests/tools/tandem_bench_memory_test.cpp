// `tandem bench memory` runs each strategy on real ranks and its measured
// model-state bytes per parameter match the ZeRO theory.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace {

TEST(TandemBenchMemory, MeasuredBytesMatchTheZeroTheory) {
  const std::string cmd = "timeout -s KILL 120 " TANDEM_BINARY_DIR
                          "/tools/tandem bench memory --model mlp --optimizer adamw --ranks 2,3 "
                          "--strategies ddp,zero2,zero3 --steps 1 --batch-size 4 2>&1";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  std::istringstream lines(out);
  int rows = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    auto j = nlohmann::json::parse(line);
    const std::string s = j["strategy"];
    const int ranks = j["ranks"];
    const double want = s == "ddp" ? 16.0 : s == "zero2" ? 4 + 12.0 / ranks : 16.0 / ranks;
    EXPECT_NEAR(j["theory_bytes_per_param"].get<double>(), want, 1e-9) << line;
    EXPECT_NEAR(j["measured_over_theory"].get<double>(), 1.0, 0.1) << line;
    EXPECT_GT(j["allocator_peak_bytes"].get<double>(), 0) << line;
    ++rows;
  }
  EXPECT_EQ(rows, 6) << out;
}

}  // namespace
