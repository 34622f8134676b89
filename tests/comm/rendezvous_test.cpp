#include "tandem/comm/rendezvous.h"

#include <ATen/ops/full.h>
#include <gtest/gtest.h>

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

TEST(Rendezvous, UnknownBackendIsRejected) {
  RendezvousInfo info;
  InitOptions o;
  o.backend = "carrier-pigeon";
  EXPECT_THROW(init(info, o), InvalidArgument);
  o.backend = "nccl";
  EXPECT_THROW(init(info, o), NotSupported);
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
            init(info_for(1, 2, port, "wrong"), {.backend = "gloo",
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
        auto comm = init(
            info_for(proc, 2, port, "right"),
            {.backend = "gloo", .timeout = Millis(20'000), .rendezvous_timeout = Millis(20'000)});
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

TEST(Rendezvous, UnreachableStoreNamesTheAddress) {
  try {
    init(info_for(1, 2, testing::free_port(), ""),
         {.backend = "gloo", .timeout = Millis(1000), .rendezvous_timeout = Millis(1500)});
    FAIL() << "connected to a store nobody serves";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("could not reach the TCP store at 127.0.0.1:"),
              std::string::npos)
        << e.what();
  }
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
