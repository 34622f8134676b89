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

WorkerIdentity identity(int local_rank, int restart_count, int master_port,
                        std::optional<int> worker_id = std::nullopt, bool joining = false) {
  return {.local_rank = local_rank,
          .restart_count = restart_count,
          .master_port = master_port,
          .worker_id = worker_id,
          .joining = joining,
          .store_served = true};
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
      as_map(worker_environment({"HOME=/root", "RANK=99", "PATH=/bin"}, o, identity(3, 2, 29500)));
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
  EXPECT_EQ(env["GLIBC_TUNABLES"], "glibc.malloc.hugetlb=1");
  EXPECT_EQ(env["HOME"], "/root");
  EXPECT_EQ(env["PATH"], "/bin");
  EXPECT_EQ(env["TANDEM_STORE_SERVED"], "1");  // the launcher serves the store
  EXPECT_EQ(env.count("TANDEM_ELASTIC"), 0u);
  EXPECT_EQ(env.count("TANDEM_WORKER_ID"), 0u);
}

TEST(LaunchOptions, WorkerEnvironmentKeepsUserThreadCounts) {
  LaunchOptions o;
  o.command = {"prog"};
  auto env = as_map(worker_environment(
      {"OMP_NUM_THREADS=4", "OPENBLAS_NUM_THREADS=2", "GLIBC_TUNABLES="}, o, identity(0, 0, 1234)));
  EXPECT_EQ(env["OMP_NUM_THREADS"], "4");
  EXPECT_EQ(env["OPENBLAS_NUM_THREADS"], "2");
  EXPECT_EQ(env["GLIBC_TUNABLES"], "");  // set, even empty: kept
  EXPECT_EQ(env["RANK"], "0");
  EXPECT_EQ(env["WORLD_SIZE"], "1");
  EXPECT_EQ(env["MASTER_PORT"], "1234");
}

TEST(LaunchOptions, StoreServedOnlyWhenTheLauncherServesIt) {
  LaunchOptions o;
  o.command = {"prog"};
  WorkerIdentity w;  // store_served = false: rank 0 serves (the benchmarks' child ranks)
  auto env = as_map(worker_environment({"TANDEM_STORE_SERVED=1"}, o, w));
  EXPECT_EQ(env.count("TANDEM_STORE_SERVED"), 0u);  // an inherited one is dropped
  w.store_served = true;
  env = as_map(worker_environment({}, o, w));
  EXPECT_EQ(env["TANDEM_STORE_SERVED"], "1");
}

TEST(LaunchOptions, ElasticFlags) {
  LaunchFlags f = flags_for();
  f.nproc_per_node = "2";
  LaunchOptions plain = make_launch_options(f);
  EXPECT_FALSE(plain.elastic);
  f.max_workers = "2";
  LaunchOptions o = make_launch_options(f);
  EXPECT_TRUE(o.elastic);
  EXPECT_EQ(o.max_workers, 2);
  EXPECT_EQ(o.min_workers, 2);  // defaults to max
  EXPECT_EQ(o.heartbeat_timeout, std::chrono::milliseconds(3000));
  f.max_workers = "4";  // room for workers started by hand
  f.min_workers = "1";
  f.heartbeat_timeout = "0.5";
  o = make_launch_options(f);
  EXPECT_EQ(o.min_workers, 1);
  EXPECT_EQ(o.heartbeat_timeout, std::chrono::milliseconds(500));

  // torchrun's --nnodes MIN:MAX: workers = nodes * nproc-per-node.
  LaunchFlags n = flags_for();
  n.nproc_per_node = "2";
  n.nnodes = "1:3";
  n.master_port = "29500";
  o = make_launch_options(n);
  EXPECT_TRUE(o.elastic);
  EXPECT_EQ(o.nnodes, 3);
  EXPECT_EQ(o.min_nnodes, 1);
  EXPECT_EQ(o.min_workers, 2);
  EXPECT_EQ(o.max_workers, 6);
  EXPECT_EQ(o.world_size(), 6);
  n.nnodes = "2:2";
  o = make_launch_options(n);
  EXPECT_FALSE(o.elastic);
  EXPECT_EQ(o.nnodes, 2);
}

TEST(LaunchOptions, RejectsBadElasticFlags) {
  auto err = [](std::map<std::string, std::string> v) {
    LaunchFlags f = flags_for();
    f.nproc_per_node = "2";
    for (auto& [k, x] : v) {
      if (k == "min") f.min_workers = x;
      if (k == "max") f.max_workers = x;
      if (k == "nnodes") f.nnodes = x;
      if (k == "hb") f.heartbeat_timeout = x;
      if (k == "port") f.master_port = x;
    }
    return error_of(f);
  };
  auto has = [](const std::string& msg, const std::string& words) {
    return msg.find(words) != std::string::npos &&
           msg.find("see 'tandem-run --help'") != std::string::npos;
  };
  std::string m = err({{"min", "0"}});
  EXPECT_TRUE(has(m, "--min-workers must be at least 1 (got 0)")) << m;
  m = err({{"min", "3"}, {"max", "2"}});
  EXPECT_TRUE(has(m, "--max-workers 2 is below --min-workers 3")) << m;
  m = err({{"max", "1"}, {"min", "1"}});
  EXPECT_TRUE(has(m, "--max-workers 1 is below --nproc-per-node 2")) << m;
  m = err({{"min", "5"}, {"max", "8"}});
  EXPECT_TRUE(has(m, "--min-workers 5 is more than the 2 workers tandem-run starts")) << m;
  m = err({{"min", "x"}});
  EXPECT_TRUE(has(m, "--min-workers must be a whole number (got 'x')")) << m;
  m = err({{"nnodes", "3:2"}, {"port", "29500"}});
  EXPECT_TRUE(has(m, "--nnodes MIN:MAX needs 1 <= MIN <= MAX (got '3:2')")) << m;
  m = err({{"nnodes", "0:2"}, {"port", "29500"}});
  EXPECT_TRUE(has(m, "--nnodes MIN:MAX needs 1 <= MIN <= MAX (got '0:2')")) << m;
  m = err({{"nnodes", "a:2"}});
  EXPECT_TRUE(has(m, "--nnodes (MIN of MIN:MAX) must be a whole number (got 'a')")) << m;
  m = err({{"nnodes", "1:"}});
  EXPECT_TRUE(has(m, "--nnodes (MAX of MIN:MAX) must be a whole number (got '')")) << m;
  m = err({{"nnodes", "1:2"}});
  EXPECT_TRUE(has(m, "--master-port is required with --nnodes 2")) << m;
  m = err({{"hb", "2"}});
  EXPECT_TRUE(has(m, "--heartbeat-timeout applies to elastic jobs only")) << m;
  m = err({{"max", "2"}, {"hb", "0"}});
  EXPECT_TRUE(has(m, "--heartbeat-timeout must be a number of seconds")) << m;
}

TEST(LaunchOptions, ElasticWorkerEnvironment) {
  LaunchOptions o;
  o.command = {"prog"};
  o.nproc_per_node = 2;
  o.elastic = true;
  o.min_workers = 1;
  o.max_workers = 3;
  o.heartbeat_timeout = std::chrono::milliseconds(1500);
  auto initial = as_map(worker_environment({}, o, identity(1, 0, 29500)));
  EXPECT_EQ(initial["TANDEM_ELASTIC"], "1:3");
  EXPECT_EQ(initial["TANDEM_WORKER_ID"], "1");  // = its rank
  EXPECT_EQ(initial["TANDEM_ELASTIC_JOIN"], "0");
  EXPECT_EQ(initial["TANDEM_HEARTBEAT_TIMEOUT"], "1.5");
  EXPECT_EQ(initial["RANK"], "1");
  EXPECT_EQ(initial["WORLD_SIZE"], "2");
  EXPECT_EQ(initial["TANDEM_STORE_SERVED"], "1");
  auto replacement = as_map(worker_environment({}, o, identity(1, 1, 29500, 5, true)));
  EXPECT_EQ(replacement["TANDEM_WORKER_ID"], "5");
  EXPECT_EQ(replacement["TANDEM_ELASTIC_JOIN"], "1");
  EXPECT_EQ(replacement["RANK"], "1");        // its original rank
  EXPECT_EQ(replacement["WORLD_SIZE"], "3");  // --max-workers
  EXPECT_EQ(replacement["TANDEM_RESTART_COUNT"], "1");
}

}  // namespace
}  // namespace tandem::launch
