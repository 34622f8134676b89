// `tandem bench fsdp`: one JSON line comparing N DDP ranks with N FSDP ranks;
// bad flags and a wrap policy that matches nothing are named.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/support/command.h"

namespace {

using tandem::testing::CommandResult;

CommandResult run(const std::string& command) { return tandem::testing::run_command(command, 120); }

const std::string kTandem = TANDEM_BINARY_DIR "/tools/tandem";

TEST(TandemBenchFsdp, PrintsOneJsonLineWithBothStrategies) {
  CommandResult r =
      run(kTandem + " bench fsdp --model mlp --ranks 2 --steps 2 --warmup 1 --rounds 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto line = r.output.substr(r.output.find("{\"batch_per_rank\""));
  auto j = nlohmann::json::parse(line.substr(0, line.find('\n')));
  EXPECT_EQ(j["ranks"], 2);
  EXPECT_EQ(j["wrap"], nlohmann::json({"LinearImpl"}));
  const double ddp = j["samples_per_s_ddp"].get<double>();
  const double fsdp = j["samples_per_s_fsdp"].get<double>();
  EXPECT_GT(ddp, 0.0);
  EXPECT_NEAR(j["fsdp_over_ddp"].get<double>(), fsdp / ddp, 1e-9 * fsdp / ddp);
  // Sharded state, though the MLP's first Linear (3/4 of it) is gathered whole.
  EXPECT_LT(j["model_state_bytes_per_rank_fsdp"].get<double>(),
            j["model_state_bytes_per_rank_ddp"].get<double>());
  EXPECT_GT(j["zero3_theory_bytes"].get<double>(), 0.0);
}

TEST(TandemBenchFsdp, BadFlagsAndPoliciesAreNamed) {
  CommandResult r = run(kTandem + " bench fsdp --ranks 0");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--ranks must be in [1, 64] (got 0)"), std::string::npos) << r.output;
  r = run(kTandem + " bench fsdp --model mlp --steps 1 --rounds 1 --wrap NopeImpl");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("no submodule is of type 'NopeImpl'"), std::string::npos) << r.output;
}

}  // namespace
