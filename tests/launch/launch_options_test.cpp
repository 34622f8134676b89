#include "tandem/launch/launch_options.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "tandem/core/error.h"

namespace tandem::launch {
namespace {

LaunchFlags flags_for(const std::vector<std::string>& command = {"./train"}) {
  LaunchFlags f;
  f.command = command;
  return f;
}

// The message of the InvalidArgument that make_launch_options throws, or
// "no error".
std::string error_of(const LaunchFlags& f) {
  try {
    make_launch_options(f);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no error";
}

std::map<std::string, std::string> as_map(const std::vector<std::string>& env) {
  std::map<std::string, std::string> out;
  for (const auto& e : env) {
    auto eq = e.find('=');
    EXPECT_EQ(out.count(e.substr(0, eq)), 0u) << "duplicate " << e;
    out[e.substr(0, eq)] = e.substr(eq + 1);
  }
  return out;
}

TEST(LaunchOptions, DefaultsMatchTorchrun) {
  LaunchOptions o = make_launch_options(flags_for());
  EXPECT_EQ(o.nproc_per_node, 1);
  EXPECT_EQ(o.nnodes, 1);
  EXPECT_EQ(o.node_rank, 0);
  EXPECT_EQ(o.master_addr, "127.0.0.1");
  EXPECT_FALSE(o.master_port.has_value());
  EXPECT_EQ(o.max_restarts, 0);
  EXPECT_TRUE(o.prefix_output);
  EXPECT_EQ(o.grace_period, std::chrono::milliseconds(5000));
  EXPECT_EQ(o.world_size(), 1);
}

TEST(LaunchOptions, ParsesEveryFlag) {
  LaunchFlags f = flags_for({"prog", "--lr", "0.1"});
  f.nproc_per_node = "4";
  f.nnodes = "3";
  f.node_rank = "2";
  f.master_addr = "10.0.0.1";
  f.master_port = "29500";
  f.max_restarts = "2";
  f.log_dir = "/tmp/logs";
  f.grace_period = "0.25";
  f.no_prefix = true;
  LaunchOptions o = make_launch_options(f);
  EXPECT_EQ(o.nproc_per_node, 4);
  EXPECT_EQ(o.nnodes, 3);
  EXPECT_EQ(o.node_rank, 2);
  EXPECT_EQ(o.master_addr, "10.0.0.1");
  EXPECT_EQ(o.master_port, 29500);
  EXPECT_EQ(o.max_restarts, 2);
  EXPECT_EQ(o.log_dir, "/tmp/logs");
  EXPECT_EQ(o.grace_period, std::chrono::milliseconds(250));
  EXPECT_FALSE(o.prefix_output);
  EXPECT_EQ(o.world_size(), 12);
  EXPECT_EQ(o.command, (std::vector<std::string>{"prog", "--lr", "0.1"}));
}

TEST(LaunchOptions, RejectsBadNprocPerNode) {
  LaunchFlags f = flags_for();
  f.nproc_per_node = "0";
  EXPECT_EQ(error_of(f), "--nproc-per-node must be at least 1 (got 0); see 'tandem-run --help'.");
  f.nproc_per_node = "two";
  EXPECT_NE(error_of(f).find("--nproc-per-node must be a whole number (got 'two')"),
            std::string::npos);
  f.nproc_per_node = "2x";
  EXPECT_NE(error_of(f).find("whole number (got '2x')"), std::string::npos);
  f.nproc_per_node = "99999999999";
  EXPECT_NE(error_of(f).find("--nproc-per-node is out of range"), std::string::npos);
}

TEST(LaunchOptions, RejectsBadNodeLayout) {
  LaunchFlags f = flags_for();
  f.nnodes = "0";
  EXPECT_NE(error_of(f).find("--nnodes must be at least 1 (got 0)"), std::string::npos);
  f.nnodes = "2";
  f.master_port = "29500";
  f.node_rank = "2";
  EXPECT_NE(error_of(f).find("--node-rank must be in [0, 2) for --nnodes 2 (got 2)"),
            std::string::npos);
  f.node_rank = "-1";
  EXPECT_NE(error_of(f).find("--node-rank must be in [0, 2)"), std::string::npos);
  f.nnodes = "65536";
  f.node_rank = "0";
  f.nproc_per_node = "65536";
  EXPECT_NE(error_of(f).find("too many workers"), std::string::npos);
}

TEST(LaunchOptions, MultiNodeNeedsMasterPort) {
  LaunchFlags f = flags_for();
  f.nnodes = "2";
  std::string msg = error_of(f);
  EXPECT_NE(msg.find("--master-port is required with --nnodes 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("see 'tandem-run --help'."), std::string::npos) << msg;
  f.master_port = "29500";
  EXPECT_EQ(error_of(f), "no error");
}

TEST(LaunchOptions, RejectsBadPortAddressRestartsAndGrace) {
  LaunchFlags f = flags_for();
  f.master_port = "0";
  EXPECT_NE(error_of(f).find("--master-port must be in [1, 65535] (got 0)"), std::string::npos);
  f.master_port = "65536";
  EXPECT_NE(error_of(f).find("(got 65536)"), std::string::npos);
  f.master_port.reset();
  f.master_addr = "";
  EXPECT_NE(error_of(f).find("--master-addr must be a host name or IP address"), std::string::npos);
  f.master_addr.reset();
  f.max_restarts = "-1";
  EXPECT_NE(error_of(f).find("--max-restarts must be at least 0 (got -1)"), std::string::npos);
  f.max_restarts.reset();
  for (const char* bad : {"0", "-2", "abc", "inf", "nan", "1e9", ""}) {
    f.grace_period = bad;
    EXPECT_NE(error_of(f).find("--grace-period must be a number of seconds"), std::string::npos)
        << bad;
  }
  f.grace_period.reset();
  f.log_dir = "";
  EXPECT_NE(error_of(f).find("--log-dir must not be empty"), std::string::npos);
}

TEST(LaunchOptions, RequiresProgram) {
  std::string msg = error_of(flags_for({}));
  EXPECT_NE(msg.find("missing PROGRAM"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'--'"), std::string::npos) << msg;
  EXPECT_NE(error_of(flags_for({""})).find("PROGRAM must not be an empty string"),
            std::string::npos);
}

TEST(LaunchOptions, ValidateChecksOptionsBuiltInCode) {
  LaunchOptions o;
  o.command = {"prog"};
  EXPECT_NO_THROW(validate(o));
  o.grace_period = std::chrono::milliseconds(0);
  EXPECT_THROW(validate(o), InvalidArgument);
  o.grace_period = std::chrono::milliseconds(10);
  o.nproc_per_node = -3;
  EXPECT_THROW(validate(o), InvalidArgument);
}

TEST(LaunchOptions, WorkerEnvironmentHasTorchrunVariables) {
  LaunchOptions o;
  o.command = {"prog"};
  o.nproc_per_node = 4;
  o.nnodes = 2;
  o.node_rank = 1;
  o.master_addr = "10.1.2.3";
  o.master_port = 29500;
  auto env =
      as_map(worker_environment({"HOME=/root", "RANK=99", "PATH=/bin"}, o,
                                {.local_rank = 3, .restart_count = 2, .master_port = 29500}));
  EXPECT_EQ(env["MASTER_ADDR"], "10.1.2.3");
  EXPECT_EQ(env["MASTER_PORT"], "29500");
  EXPECT_EQ(env["RANK"], "7");  // node 1 * 4 + local 3; the inherited 99 is replaced
  EXPECT_EQ(env["WORLD_SIZE"], "8");
  EXPECT_EQ(env["LOCAL_RANK"], "3");
  EXPECT_EQ(env["LOCAL_WORLD_SIZE"], "4");
  EXPECT_EQ(env["GROUP_RANK"], "1");
  EXPECT_EQ(env["TANDEM_NODE_RANK"], "1");
  EXPECT_EQ(env["TANDEM_RESTART_COUNT"], "2");
  EXPECT_EQ(env["TORCHELASTIC_RESTART_COUNT"], "2");
  EXPECT_EQ(env["OMP_NUM_THREADS"], "1");
  EXPECT_EQ(env["OPENBLAS_NUM_THREADS"], "1");
  EXPECT_EQ(env["HOME"], "/root");
  EXPECT_EQ(env["PATH"], "/bin");
}

TEST(LaunchOptions, WorkerEnvironmentKeepsUserThreadCounts) {
  LaunchOptions o;
  o.command = {"prog"};
  auto env = as_map(worker_environment({"OMP_NUM_THREADS=4", "OPENBLAS_NUM_THREADS=2"}, o,
                                       {.local_rank = 0, .restart_count = 0, .master_port = 1234}));
  EXPECT_EQ(env["OMP_NUM_THREADS"], "4");
  EXPECT_EQ(env["OPENBLAS_NUM_THREADS"], "2");
  EXPECT_EQ(env["RANK"], "0");
  EXPECT_EQ(env["WORLD_SIZE"], "1");
  EXPECT_EQ(env["MASTER_PORT"], "1234");
}

}  // namespace
}  // namespace tandem::launch
