#include "tandem/comm/rendezvous.h"

#include <ATen/ops/full.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>

#include "tandem/core/error.h"
#include "tests/support/fake_env.h"
#include "tests/support/multiproc.h"

namespace tandem {
namespace {

using testing::fake_env;

env::Lookup fake(std::map<std::string, std::string> vars) { return fake_env(std::move(vars)); }

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no InvalidArgument";
}

TEST(Rendezvous, NothingSetIsASingleProcess) {
  auto info = read_rendezvous_env(fake({}));
  EXPECT_EQ(info.source, "single");
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.rank, 0);
}

TEST(Rendezvous, ReadsTorchrunVariables) {
  auto info = read_rendezvous_env(fake({{"RANK", "5"},
                                        {"WORLD_SIZE", "8"},
                                        {"LOCAL_RANK", "1"},
                                        {"LOCAL_WORLD_SIZE", "4"},
                                        {"GROUP_RANK", "1"},
                                        {"MASTER_ADDR", "10.1.2.3"},
                                        {"MASTER_PORT", "29600"},
                                        {"TANDEM_RESTART_COUNT", "2"},
                                        {"TANDEM_RDZV_TOKEN", "s3"}}));
  EXPECT_EQ(info.source, "torchrun");
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.world_size, 8);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.local_world_size, 4);
  EXPECT_EQ(info.node_rank, 1);
  EXPECT_EQ(info.master_addr, "10.1.2.3");
  EXPECT_EQ(info.master_port, 29600);
  EXPECT_EQ(info.restart_count, 2);
  EXPECT_EQ(info.token, "s3");
}

TEST(Rendezvous, ReadsOpenMpiAndSlurmVariables) {
  auto mpi = read_rendezvous_env(fake({{"OMPI_COMM_WORLD_RANK", "3"},
                                       {"OMPI_COMM_WORLD_SIZE", "4"},
                                       {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                       {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}));
  EXPECT_EQ(mpi.source, "mpi");
  EXPECT_EQ(mpi.rank, 3);
  EXPECT_EQ(mpi.node_rank, 1);
  EXPECT_EQ(mpi.master_addr, "127.0.0.1");
  EXPECT_EQ(mpi.master_port, 29500);
  auto slurm = read_rendezvous_env(fake({{"SLURM_PROCID", "6"},
                                         {"SLURM_NTASKS", "8"},
                                         {"SLURM_LOCALID", "2"},
                                         {"SLURM_NTASKS_PER_NODE", "4(x2)"},
                                         {"SLURM_NODEID", "1"},
                                         {"MASTER_ADDR", "node0"}}));
  EXPECT_EQ(slurm.source, "slurm");
  EXPECT_EQ(slurm.rank, 6);
  EXPECT_EQ(slurm.local_world_size, 4);
  EXPECT_EQ(slurm.node_rank, 1);
  EXPECT_EQ(slurm.master_addr, "node0");
}

TEST(Rendezvous, BadVariablesAreNamed) {
  EXPECT_NE(message_of([] {
              read_rendezvous_env(fake({{"RANK", "0"}}));
            }).find("RANK is set but WORLD_SIZE is not"),
            std::string::npos);
  EXPECT_NE(
      message_of([] {
        read_rendezvous_env(
            fake({{"RANK", "4"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}));
      }).find("rank 4 is not below the world size 4"),
      std::string::npos);
  EXPECT_NE(message_of([] {
              read_rendezvous_env(fake({{"RANK", "1"}, {"WORLD_SIZE", "2"}}));
            }).find("MASTER_ADDR/MASTER_PORT are not"),
            std::string::npos);
  EXPECT_NE(
      message_of([] {
        read_rendezvous_env(fake(
            {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "70000"}}));
      }).find("MASTER_PORT=70000 is out of range"),
      std::string::npos);
}

// Issue 14: an out-of-range SLURM_NTASKS_PER_NODE escaped as
// std::out_of_range, and trailing junk ("4x") was read as 4.
TEST(Rendezvous, SlurmTasksPerNodeIsCheckedWhole) {
  auto slurm = [](const std::string& per_node) {
    return read_rendezvous_env(fake({{"SLURM_PROCID", "0"},
                                     {"SLURM_NTASKS", "8"},
                                     {"SLURM_LOCALID", "0"},
                                     {"SLURM_NTASKS_PER_NODE", per_node}}));
  };
  EXPECT_EQ(slurm("4").local_world_size, 4);
  EXPECT_EQ(slurm("2(x3),1").local_world_size, 2);
  EXPECT_EQ(slurm("4,4").local_world_size, 4);
  for (const char* junk : {"4x", "x4", "4(x2", "4(2)", "(x2)", "4,", "4(x2)x", "0", "-4"}) {
    std::string msg = message_of([&] { slurm(junk); });
    EXPECT_NE(msg.find(fmt::format("SLURM_NTASKS_PER_NODE='{}'", junk)), std::string::npos)
        << junk << ": " << msg;
  }
  for (const char* big : {"99999999999", "4(x99999999999)", "2,99999999999999999999"}) {
    std::string msg = message_of([&] { slurm(big); });
    EXPECT_NE(msg.find(fmt::format("SLURM_NTASKS_PER_NODE='{}'", big)), std::string::npos) << msg;
    EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
  }
}

// Every integer variable becomes an int: one beyond INT_MAX is an error, not
// a wrapped value (4294967296 used to become rank 0).
TEST(Rendezvous, IntegersBeyondAnIntAreErrors) {
  std::string msg = message_of([] {
    read_rendezvous_env(fake(
        {{"RANK", "4294967296"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}));
  });
  EXPECT_NE(msg.find("RANK=4294967296 is out of range [0, 2147483647]"), std::string::npos) << msg;
  msg = message_of([] {
    read_rendezvous_env(fake({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "3x"}}));
  });
  EXPECT_NE(msg.find("OMPI_COMM_WORLD_SIZE='3x' is not a whole number"), std::string::npos) << msg;
  msg = message_of([] {
    read_rendezvous_env(fake({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "99999999999999999999"}}));
  });
  EXPECT_NE(msg.find("SLURM_NTASKS=99999999999999999999 is out of range"), std::string::npos)
      << msg;
}

TEST(Rendezvous, BackendsParseByName) {
  for (Backend b : {Backend::kAuto, Backend::kShm, Backend::kGloo, Backend::kMpi}) {
    EXPECT_EQ(parse_backend(to_string(b)), b);
  }
  std::string msg = message_of([] { parse_backend("carrier-pigeon"); });
  EXPECT_EQ(msg, "unknown backend 'carrier-pigeon'; choose auto, shm, gloo or mpi");
  try {
    parse_backend("nccl");
    ADD_FAILURE() << "nccl parsed";
  } catch (const NotSupported& e) {
    EXPECT_NE(std::string(e.what()).find("no NCCL backend exists yet"), std::string::npos)
        << e.what();
  }
}

// Issue 14: the timeouts could not be set from the environment. An explicit
// InitOptions value wins over the variable, which wins over the default.
TEST(Rendezvous, TimeoutsComeFromOptionsThenEnvironmentThenDefaults) {
  InitTimeouts t = resolve_timeouts({}, fake({}));
  EXPECT_EQ(t.timeout, kDefaultTimeout);
  EXPECT_EQ(t.rendezvous_timeout, kDefaultRendezvousTimeout);
  auto env = fake({{"TANDEM_COMM_TIMEOUT", "42.5"}, {"TANDEM_RDZV_TIMEOUT", "7"}});
  t = resolve_timeouts({}, env);
  EXPECT_EQ(t.timeout, Millis(42'500));
  EXPECT_EQ(t.rendezvous_timeout, Millis(7'000));
  t = resolve_timeouts({.timeout = Millis(1'000), .rendezvous_timeout = Millis(2'000)}, env);
  EXPECT_EQ(t.timeout, Millis(1'000));
  EXPECT_EQ(t.rendezvous_timeout, Millis(2'000));
  t = resolve_timeouts({.rendezvous_timeout = Millis(2'000)}, env);
  EXPECT_EQ(t.timeout, Millis(42'500));
}

TEST(Rendezvous, BadTimeoutsNameTheirSetting) {
  for (const char* var : {"TANDEM_COMM_TIMEOUT", "TANDEM_RDZV_TIMEOUT"}) {
    for (const char* bad : {"0", "-5", "ten"}) {
      std::string msg = message_of([&] { resolve_timeouts({}, fake({{var, bad}})); });
      EXPECT_NE(msg.find(fmt::format("environment variable {}", var)), std::string::npos) << msg;
      EXPECT_NE(msg.find(bad), std::string::npos) << msg;
    }
  }
  // An explicit value is checked too (and the variable is not consulted).
  std::string msg = message_of([] {
    resolve_timeouts({.timeout = Millis(0)}, fake({{"TANDEM_COMM_TIMEOUT", "ten"}}));
  });
  EXPECT_NE(msg.find("InitOptions::timeout must be positive (got 0 ms)"), std::string::npos) << msg;
  msg = message_of([] { resolve_timeouts({.rendezvous_timeout = Millis(-1)}, fake({})); });
  EXPECT_NE(msg.find("InitOptions::rendezvous_timeout must be positive"), std::string::npos) << msg;
}

RendezvousInfo info_for(int rank, int size, int port, std::string token) {
  RendezvousInfo info;
  info.rank = rank;
  info.world_size = size;
  info.master_port = port;
  info.source = "torchrun";
  info.token = std::move(token);
  return info;
}

// Ranks 0 and 1 form the job; process 2 claims rank 1 with the wrong token.
// It is refused before it writes anything, and the job carries on.
TEST(Rendezvous, WrongTokenIsRefusedAndTheJobCarriesOn) {
  auto results = testing::run_ranks(
      3,
      [](int proc, int, int port) {
        if (proc == 2) {
          try {
            init(info_for(1, 2, port, "wrong"), {.backend = Backend::kGloo,
                                                 .timeout = Millis(20'000),
                                                 .rendezvous_timeout = Millis(20'000)});
            ADD_FAILURE() << "a process with the wrong token was admitted";
          } catch (const InvalidArgument& e) {
            std::string msg = e.what();
            EXPECT_NE(msg.find("TANDEM_RDZV_TOKEN does not match"), std::string::npos) << msg;
            EXPECT_NE(msg.find("the job carries on"), std::string::npos) << msg;
          }
          return;
        }
        auto comm = init(info_for(proc, 2, port, "right"), {.backend = Backend::kGloo,
                                                            .timeout = Millis(20'000),
                                                            .rendezvous_timeout = Millis(20'000)});
        at::Tensor t = at::full({4}, static_cast<double>(proc + 1), at::kFloat);
        comm->all_reduce(t);
        EXPECT_EQ(t[0].item<float>(), 3.0f);
        comm->barrier();
      },
      {.timeout = std::chrono::milliseconds(60'000), .env = {}});
  for (const auto& r : results) {
    EXPECT_TRUE(r.ok()) << "process " << r.rank << " (" << r.how() << "):\n"
                        << testing::tail(r.output);
  }
}

// Reads a file this process wrote (the redirected stdout/stderr of a rank).
std::string slurp(const std::string& path) {
  std::string out;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
    std::fclose(f);
  }
  return out;
}

// Issue 14: a refused connection to the store waited the whole rendezvous
// timeout in silence. Now the rank says on stderr (never stdout), every few
// seconds, what it waits for, and the final error names the address and the
// setting to raise.
TEST(Rendezvous, UnreachableStoreIsReportedWhileWaiting) {
  auto results = testing::run_ranks(1, [](int, int, int) {
    const int port = testing::free_port();  // nobody serves it
    const std::string out_path = fmt::format("/tmp/tandem-rdzv-{}.out", getpid());
    const std::string err_path = fmt::format("/tmp/tandem-rdzv-{}.err", getpid());
    std::fflush(stdout);
    std::fflush(stderr);
    const int saved_out = dup(1);
    const int saved_err = dup(2);
    ASSERT_TRUE(std::freopen(out_path.c_str(), "w", stdout));
    ASSERT_TRUE(std::freopen(err_path.c_str(), "w", stderr));
    std::string error;
    auto start = std::chrono::steady_clock::now();
    try {
      init(info_for(1, 2, port, ""), {.backend = Backend::kGloo,
                                      .timeout = Millis(1000),
                                      .rendezvous_timeout = Millis(2'500)});
    } catch (const TimeoutError& e) {
      error = e.what();
    }
    const auto waited = std::chrono::steady_clock::now() - start;
    std::fflush(stdout);
    std::fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    const std::string out = slurp(out_path);
    const std::string err = slurp(err_path);
    std::remove(out_path.c_str());
    std::remove(err_path.c_str());
    EXPECT_LT(waited, std::chrono::milliseconds(5'000));
    EXPECT_NE(error.find(fmt::format("rank 1: rendezvous: could not reach the TCP store at "
                                     "127.0.0.1:{} within 2.5 s",
                                     port)),
              std::string::npos)
        << error;
    EXPECT_NE(error.find("raise --rendezvous-timeout or TANDEM_RDZV_TIMEOUT "
                         "(InitOptions::rendezvous_timeout)"),
              std::string::npos)
        << error;
    const std::string progress = fmt::format(
        "[tandem W rank 1] waiting for the TCP store at 127.0.0.1:{}: no connection after ", port);
    EXPECT_NE(err.find(progress), std::string::npos) << "stderr:\n" << err;
    EXPECT_NE(err.find("giving up at 2.5 s"), std::string::npos) << "stderr:\n" << err;
    EXPECT_EQ(out, "") << "stdout must stay clean";
  });
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].ok()) << results[0].how() << "\n" << testing::tail(results[0].output);
}

// init(auto) on one host picks shared memory; with two fake hosts of two
// ranks it composes shm within a host and gloo across.
TEST(Rendezvous, AutoPicksSharedMemoryOrHierarchical) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = init(info_for(rank, size, port, ""), {});
    EXPECT_EQ(comm->backend(), "shm");
  });
  testing::expect_ranks_succeed(4, [](int rank, int size, int port) {
    setenv("TANDEM_HOST_ID", rank < 2 ? "host-a" : "host-b", 1);
    auto comm = init(info_for(rank, size, port, ""), {});
    EXPECT_EQ(comm->backend(), "hier(shm+gloo)");
    at::Tensor t = at::full({1001}, static_cast<double>(rank), at::kDouble);
    comm->all_reduce(t);
    EXPECT_EQ(t[1000].item<double>(), 6.0);
  });
}

}  // namespace
}  // namespace tandem
