// Flag handling of the tandem-run binary: every bad flag exits 2 with one
// "tandem-run: error: ..." line naming the flag; a program that cannot be
// executed exits 127 (not found) or 126 (not executable).
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/launch/tandem_run_process.h"

namespace tandem::testing {
namespace {

using std::chrono::seconds;

void expect_usage_error(const std::vector<std::string>& args, const std::string& words) {
  TandemRunResult r = run_tandem(args, seconds(20));
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("tandem-run: error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(words), std::string::npos) << "expected '" << words << "' in: " << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(LauncherCli, BadFlagsExitTwoWithClearMessages) {
  expect_usage_error({"--nproc-per-node", "0", "--", "true"},
                     "--nproc-per-node must be at least 1 (got 0); see 'tandem-run --help'.");
  expect_usage_error({"--nproc-per-node", "abc", "--", "true"},
                     "--nproc-per-node must be a whole number (got 'abc')");
  expect_usage_error({"--nnodes", "0", "--", "true"}, "--nnodes must be at least 1 (got 0)");
  expect_usage_error({"--nnodes", "2", "--master-port", "29500", "--node-rank", "5", "--", "true"},
                     "--node-rank must be in [0, 2)");
  expect_usage_error({"--nnodes", "2", "--", "true"}, "--master-port is required with --nnodes 2");
  expect_usage_error({"--master-port", "70000", "--", "true"},
                     "--master-port must be in [1, 65535] (got 70000)");
  expect_usage_error({"--max-restarts", "-1", "--", "true"},
                     "--max-restarts must be at least 0 (got -1)");
  expect_usage_error({"--grace-period", "0", "--", "true"}, "--grace-period must be a number");
  expect_usage_error({"--log-dir", "", "--", "true"}, "--log-dir must not be empty");
  expect_usage_error({"--no-such-flag", "--", "true"}, "unknown flag '--no-such-flag'");
  expect_usage_error({"--nproc-per-node"}, "--nproc-per-node");
  expect_usage_error({"--min-workers", "0", "--", "true"},
                     "--min-workers must be at least 1 (got 0)");
  expect_usage_error(
      {"--nproc-per-node", "2", "--max-workers", "1", "--min-workers", "1", "--", "true"},
      "--max-workers 1 is below --nproc-per-node 2");
  expect_usage_error({"--nnodes", "3:1", "--master-port", "29500", "--", "true"},
                     "--nnodes MIN:MAX needs 1 <= MIN <= MAX (got '3:1')");
  expect_usage_error({"--heartbeat-timeout", "2", "--", "true"},
                     "--heartbeat-timeout applies to elastic jobs only");
}

TEST(LauncherCli, MissingProgramIsAnError) {
  expect_usage_error({}, "missing PROGRAM");
  expect_usage_error({"--nproc-per-node", "2", "--"}, "missing PROGRAM");
}

TEST(LauncherCli, HelpShowsUsage) {
  TandemRunResult r = run_tandem({"--help"}, seconds(20));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("Usage: tandem-run"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--nproc-per-node"), std::string::npos);
  EXPECT_NE(r.out.find("--grace-period"), std::string::npos);
}

TEST(LauncherCli, ProgramNotFoundExits127) {
  TandemRunResult r = run_tandem({"--", "tandem-no-such-program-xyz"}, seconds(20));
  EXPECT_EQ(r.exit_code, 127) << r.err;
  EXPECT_NE(r.err.find("tandem-run: error: cannot execute 'tandem-no-such-program-xyz'"),
            std::string::npos)
      << r.err;
  r = run_tandem({"--", "/no/such/dir/prog"}, seconds(20));
  EXPECT_EQ(r.exit_code, 127) << r.err;
  EXPECT_NE(r.err.find("'/no/such/dir/prog'"), std::string::npos) << r.err;
}

TEST(LauncherCli, ProgramNotExecutableExits126) {
  TempDir dir;
  std::string script = dir.file("not-executable.sh");
  { std::ofstream(script) << "#!/bin/sh\necho hi\n"; }
  TandemRunResult r = run_tandem({"--", script}, seconds(20));
  EXPECT_EQ(r.exit_code, 126) << r.err;
  EXPECT_NE(r.err.find("cannot execute '" + script + "': it is not executable"), std::string::npos)
      << r.err;
  r = run_tandem({"--", dir.path()}, seconds(20));
  EXPECT_EQ(r.exit_code, 126) << r.err;
  EXPECT_NE(r.err.find("it is a directory"), std::string::npos) << r.err;
}

TEST(LauncherCli, CommandWithoutDoubleDashKeepsItsFlags) {
  TandemRunResult r =
      run_tandem({"--nproc-per-node", "1", "echo", "x", "--nproc-per-node", "9"}, seconds(20));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[rank 0] x --nproc-per-node 9\n");
  r = run_tandem({"--", "echo", "--", "y"}, seconds(20));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[rank 0] -- y\n");
}

}  // namespace
}  // namespace tandem::testing
