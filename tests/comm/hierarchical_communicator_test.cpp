#include <gtest/gtest.h>

#include "tandem/comm/backend.h"
#include "tandem/core/error.h"
#include "tests/support/collective_checks.h"
#include "tests/support/multiproc.h"

namespace tandem {
namespace {

// Two "hosts" of two ranks, each part a Gloo group: checks the composition
// itself; init() puts shared memory in the local part.
std::shared_ptr<Communicator> make_two_by_two(int rank, int size, int port) {
  auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
  BackendOptions o{rank, size, with_prefix(store, "hier"), Millis(30'000), "hier"};
  auto world = make_gloo_communicator(o, "127.0.0.1");
  auto local = world->split(rank / 2, rank);
  auto cross = world->split(rank % 2, rank);
  return make_hierarchical_communicator(rank, size, local, cross, world, Millis(30'000));
}

TEST(HierarchicalCommunicator, MatchesTheFlatResults) {
  testing::expect_ranks_succeed(4, [](int rank, int size, int port) {
    auto comm = make_two_by_two(rank, size, port);
    EXPECT_EQ(comm->backend(), "hier(gloo+gloo)");
    testing::check_collectives(*comm, {0, 1, 7, 1000});
  });
}

TEST(HierarchicalCommunicator, RejectsRanksNotNumberedHostByHost) {
  testing::expect_ranks_succeed(4, [](int rank, int size, int port) {
    auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
    BackendOptions o{rank, size, with_prefix(store, "hier"), Millis(30'000), "hier"};
    auto world = make_gloo_communicator(o, "127.0.0.1");
    // "Hosts" {0, 2} and {1, 3}: not host by host.
    auto local = world->split(rank % 2, rank);
    auto cross = world->split(rank / 2, rank);
    EXPECT_THROW(make_hierarchical_communicator(rank, size, local, cross, world, Millis(1000)),
                 InvalidArgument);
  });
}

}  // namespace
}  // namespace tandem
