// Tests of the MPI backend. The binary runs under mpirun (see CMakeLists.txt):
// every rank runs every test, in definition order, so each test is collective
// and every rank must take the same branches (skips included).
#include "comm/mpi/mpi_communicator.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "tandem/comm/backend.h"
#include "tandem/comm/store.h"
#include "tandem/core/error.h"
#include "tests/support/collective_checks.h"
#include "tests/support/multiproc.h"

namespace tandem {
namespace {

// Short enough that a rank stuck behind a failed peer ends well inside the
// ctest TIMEOUT, long enough for 2^20-element collectives on loaded cores.
constexpr Millis kTestTimeout{30'000};

struct WorldPosition {
  int rank = 0;
  int size = 1;
};

// The launcher's view of this process: OpenMPI's mpirun, then PMI (Slurm,
// MPICH); a process started without a launcher is an MPI singleton.
WorldPosition world_position() {
  for (auto [rank_var, size_var] : {std::pair{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                    std::pair{"PMI_RANK", "PMI_SIZE"}}) {
    const char* r = std::getenv(rank_var);
    const char* s = std::getenv(size_var);
    if (r != nullptr && s != nullptr) return {std::atoi(r), std::atoi(s)};
  }
  return {};
}

// Options for a communicator over the whole MPI world.
BackendOptions world_options(Millis timeout = kTestTimeout) {
  WorldPosition w = world_position();
  BackendOptions options;
  options.rank = w.rank;
  options.size = w.size;
  options.timeout = timeout;
  return options;
}

std::shared_ptr<Communicator> make_world(Millis timeout = kTestTimeout) {
  return make_mpi_communicator(world_options(timeout));
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(MpiCommunicator, MatchesTheMpiWorld) {
  WorldPosition w = world_position();
  auto comm = make_world();
  EXPECT_TRUE(mpi_available());
  EXPECT_EQ(comm->backend(), "mpi");
  EXPECT_EQ(comm->rank(), w.rank);
  EXPECT_EQ(comm->size(), w.size);
  EXPECT_EQ(comm->timeout(), kTestTimeout);
}

TEST(MpiCommunicator, PassesCollectiveChecks) {
  auto comm = make_world();
  testing::check_collectives(*comm);
  EXPECT_EQ(comm->failure(), "");
}

TEST(MpiCommunicator, AllGatherAcceptsItsOwnSliceOfTheOutput) {
  auto comm = make_world();
  const int64_t n = 2 * comm->size() + 1;  // uneven shards
  auto mine = shard_range(n, comm->size(), comm->rank());
  at::Tensor out = at::full({n}, -1.0, at::kFloat);
  out.narrow(0, mine.offset, mine.numel).fill_(static_cast<double>(comm->rank()));
  comm->all_gather(out, out.narrow(0, mine.offset, mine.numel));
  for (int r = 0; r < comm->size(); ++r) {
    auto s = shard_range(n, comm->size(), r);
    if (s.numel > 0) {
      EXPECT_EQ(out[s.offset].item<float>(), static_cast<float>(r)) << "shard " << r;
    }
  }
}

TEST(MpiCommunicator, AsyncAllReducesKeepIssueOrder) {
  auto comm = make_world();
  const int n = comm->size();
  std::vector<at::Tensor> tensors;
  std::vector<std::shared_ptr<Work>> works;
  for (int i = 0; i < 8; ++i) {
    tensors.push_back(at::full({1000}, static_cast<double>(comm->rank() + i), at::kDouble));
    works.push_back(comm->all_reduce_async(tensors.back()));
  }
  for (int i = 0; i < 8; ++i) {
    works[static_cast<size_t>(i)]->wait(kTestTimeout);
    // sum over r of (r + i)
    double want = n * (n - 1) / 2.0 + static_cast<double>(n) * i;
    EXPECT_EQ(tensors[static_cast<size_t>(i)][999].item<double>(), want) << "operation " << i;
  }
}

TEST(MpiCommunicator, SplitFormsGroupsByColorAndKey) {
  auto world = make_world();
  const int rank = world->rank();
  const int size = world->size();
  // Even and odd ranks, ordered by descending world rank.
  auto half = world->split(rank % 2, size - rank);
  ASSERT_NE(half, nullptr);
  int members = (size + 1 - rank % 2) / 2;
  EXPECT_EQ(half->size(), members);
  EXPECT_EQ(half->rank(), members - 1 - rank / 2);
  EXPECT_EQ(half->backend(), "mpi");
  at::Tensor t = at::full({3}, static_cast<int64_t>(rank), at::kLong);
  half->all_reduce(t);
  int64_t want = 0;
  for (int r = rank % 2; r < size; r += 2) want += r;
  EXPECT_EQ(t[2].item<int64_t>(), want);
  testing::check_collectives(*half, {0, 1, 7});

  auto none = world->split(-1);
  EXPECT_EQ(none, nullptr);
  world->barrier();
}

TEST(MpiCommunicator, NewGroupHoldsOnlyTheListedRanks) {
  auto world = make_world();
  const int rank = world->rank();
  const int size = world->size();
  std::vector<int> ranks = {0};
  if (size > 1) ranks.push_back(size - 1);
  auto group = world->new_group(ranks);
  bool member = rank == 0 || rank == size - 1;
  ASSERT_EQ(group != nullptr, member);
  if (group) {
    EXPECT_EQ(group->size(), static_cast<int>(ranks.size()));
    EXPECT_EQ(group->rank(), rank == 0 ? 0 : 1);
    testing::check_collectives(*group, {0, 7});
  }
  world->barrier();
}

template <typename Fn>
void expect_invalid_argument(Fn&& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "expected InvalidArgument mentioning '" << part << "'";
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(contains(e.what(), part)) << e.what();
  }
}

TEST(MpiCommunicator, RejectsBadInput) {
  WorldPosition w = world_position();
  BackendOptions wrong;
  wrong.rank = w.rank;
  wrong.size = w.size + 1;
  expect_invalid_argument([&] { make_mpi_communicator(wrong); }, "MPI_COMM_WORLD");
  wrong.size = w.size;
  wrong.rank = w.rank + w.size;
  expect_invalid_argument([&] { make_mpi_communicator(wrong); }, "MPI_COMM_WORLD");
  wrong.rank = w.rank;
  wrong.timeout = Millis(0);
  expect_invalid_argument([&] { make_mpi_communicator(wrong); }, "BackendOptions::timeout");

  auto comm = make_world();
  const int size = comm->size();
  at::Tensor t = at::zeros({4}, at::kFloat);
  expect_invalid_argument([&] { comm->broadcast(t, size); }, "root");
  expect_invalid_argument([&] { comm->all_reduce(t, ReduceOp::kSum, Millis(0)); }, "timeout");
  expect_invalid_argument(
      [&] {
        comm->all_reduce(at::zeros({2, 4}, at::kFloat).t());
      },
      "contiguous");
  expect_invalid_argument([&] { comm->all_reduce(at::zeros({4}, at::kBool)); },
                          "ReduceOp sum is not defined for bool tensors");
  expect_invalid_argument(
      [&] {
        comm->reduce_scatter(at::zeros({4}, at::kComplexDouble),
                             at::zeros({4 * size}, at::kComplexDouble), ReduceOp::kMin);
      },
      "ReduceOp min is not defined for ComplexDouble tensors");
  // Shards of 4 everywhere, so every rank rejects the output of 5.
  expect_invalid_argument(
      [&] { comm->reduce_scatter(at::zeros({5}, at::kFloat), at::zeros({4 * size}, at::kFloat)); },
      "shard");
  expect_invalid_argument([&] { comm->send(t, comm->rank()); }, "itself");
  expect_invalid_argument([&] { comm->recv(t, size); }, "outside");
  // Bad input leaves the communicator usable.
  EXPECT_EQ(comm->failure(), "");
  comm->all_reduce(t);
  comm->barrier();
}

TEST(MpiCommunicator, RecvTimeoutNamesThePeer) {
  auto world = make_world();
  if (world->size() < 2) GTEST_SKIP() << "a receive needs a peer; run with -np 2 or more";
  auto comm = make_world();
  const int peer = (comm->rank() + 1) % comm->size();
  at::Tensor t = at::zeros({7}, at::kFloat);
  // Nobody sends with this tag.
  try {
    comm->recv(t, peer, 4242, Millis(500));
    ADD_FAILURE() << "expected TimeoutError";
  } catch (const TimeoutError& e) {
    std::string m = e.what();
    EXPECT_TRUE(contains(m, fmt::format("rank {}: recv from rank {} tag 4242", comm->rank(), peer)))
        << m;
    EXPECT_TRUE(contains(m, fmt::format("waiting for rank {}", peer))) << m;
    EXPECT_TRUE(contains(m, "timed out after")) << m;
    EXPECT_TRUE(contains(m, "BackendOptions::timeout")) << m;
  }
  EXPECT_THROW(comm->barrier(), PeerError);
  world->barrier();
}

// The last rank enters a barrier alone and times out; then the others join
// it, so that its abandoned request completes and MPI_Finalize has nothing
// pending. Returns the last rank's TimeoutError text (empty elsewhere).
std::string last_rank_times_out_alone(Communicator& world, Communicator& comm) {
  const int last = comm.size() - 1;
  std::string message;
  if (comm.rank() == last) {
    try {
      comm.barrier(Millis(300));
      ADD_FAILURE() << "expected TimeoutError";
    } catch (const TimeoutError& e) {
      message = e.what();
    }
    EXPECT_THROW(comm.barrier(), PeerError);
    EXPECT_TRUE(contains(message, fmt::format("rank {}: barrier #1", last))) << message;
    EXPECT_TRUE(contains(message, fmt::format("{}-rank MPI group", comm.size()))) << message;
    EXPECT_TRUE(contains(message, "unusable")) << message;
    EXPECT_TRUE(contains(message, "TANDEM_COMM_TIMEOUT")) << message;
  }
  world.barrier();
  if (comm.rank() != last) comm.barrier();
  world.barrier();
  return message;
}

TEST(MpiCommunicator, CollectiveTimeoutNamesTheGroup) {
  auto world = make_world();
  if (world->size() < 2) GTEST_SKIP() << "a collective times out only with a peer; use -np 2+";
  auto comm = make_world();
  std::string m = last_rank_times_out_alone(*world, *comm);
  if (!m.empty()) {
    EXPECT_TRUE(contains(m, "has no store to ask")) << m;
  }
}

// A loopback TCP store shared by the job: rank 0 serves it on a port it
// picks and tells the others over MPI.
std::shared_ptr<Store> job_store(Communicator& world) {
  at::Tensor port = at::full({1}, world.rank() == 0 ? testing::free_port() : 0, at::kInt);
  world.broadcast(port, 0);
  return make_tcp_store("127.0.0.1", port.item<int>(), world.rank() == 0, kTestTimeout);
}

// Issue 14: "every failure names the peers" was false under MPI. With a
// store (init() always has one), each rank posts how far it got, and a
// collective timeout names the ranks that have not reached it.
TEST(MpiCommunicator, CollectiveTimeoutNamesTheMissingRanks) {
  auto world = make_world();
  if (world->size() < 2) GTEST_SKIP() << "a collective times out only with a peer; use -np 2+";
  auto store = job_store(*world);
  BackendOptions options = world_options();
  options.store = with_prefix(store, "board-test");
  options.group_name = "board-test";
  auto comm = make_mpi_communicator(options);
  world->barrier();  // every rank's board has posted (its constructor posts once)
  std::string m = last_rank_times_out_alone(*world, *comm);
  if (m.empty()) return;  // not the last rank
  EXPECT_TRUE(contains(m, "ranks that have not reached it: rank 0 (last entered collective #0"))
      << m;
  if (comm->size() > 2) {
    EXPECT_TRUE(contains(m, "rank 1 (last entered collective #0")) << m;
  }
  EXPECT_FALSE(contains(m, "MPI cannot tell")) << m;
}

// Issue 14: "any length" was false above INT_MAX elements. Every call is cut
// into pieces of at most the communicator's largest count, which a test can
// lower: the pieced paths must give what the whole calls give.
TEST(MpiCommunicator, PiecedCallsGiveWhatWholeCallsGive) {
  auto whole = make_world();
  auto pieced = detail::make_pieced_mpi_communicator(world_options(), 5);
  testing::check_collectives(*pieced, {0, 1, 5, 7, 1003});
  const int rank = whole->rank();
  const int size = whole->size();
  const int64_t n = 1003;  // pieces of 5, uneven shards
  auto run = [&](Communicator& c) {
    std::vector<at::Tensor> out;
    at::Tensor t = at::arange(n, at::kLong).mul_(rank + 1);
    c.all_reduce(t);
    out.push_back(t);
    at::Tensor b = rank == size - 1 ? at::arange(n, at::kLong) : at::zeros({n}, at::kLong);
    c.broadcast(b, size - 1);
    out.push_back(b);
    auto mine = shard_range(n, size, rank);
    at::Tensor shard = at::zeros({mine.numel}, at::kLong);
    c.reduce_scatter(shard, at::arange(n, at::kLong).add_(rank));
    out.push_back(shard);
    at::Tensor gathered = at::zeros({n}, at::kLong);
    c.all_gather(gathered, shard);
    out.push_back(gathered);
    at::Tensor a2a = at::zeros({n * size}, at::kLong);
    c.all_to_all(a2a, at::arange(n * size, at::kLong).add_(1000 * rank));
    out.push_back(a2a);
    if (size > 1) {
      at::Tensor got = at::zeros({n}, at::kLong);
      auto send = c.send_async(at::arange(n, at::kLong).add_(rank), (rank + 1) % size, 3);
      c.recv(got, (rank + size - 1) % size, 3);
      send->wait(kTestTimeout);
      out.push_back(got);
    }
    return out;
  };
  auto want = run(*whole);
  auto got = run(*pieced);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(at::equal(want[i], got[i])) << "op " << i;
}

TEST(MpiCommunicator, PiecedReceiveChecksTheWholeLength) {
  auto world = make_world();
  if (world->size() < 2) GTEST_SKIP() << "a receive needs a peer; run with -np 2 or more";
  auto comm = detail::make_pieced_mpi_communicator(world_options(), 4);
  if (comm->rank() == 0) {
    comm->send(at::zeros({12}, at::kFloat), 1, 9);
  } else if (comm->rank() == 1) {
    expect_invalid_argument([&] { comm->recv(at::zeros({10}, at::kFloat), 0, 9); },
                            "sent 12 elements but this tensor holds 10");
  }
  world->barrier();
}

// Run only by the ctest 'mpi.failing_rank_fails_mpirun', which checks that a
// gtest failure on one rank makes mpirun exit non-zero.
TEST(MpiHarness, DISABLED_FailOnLastRank) {
  auto comm = make_world();
  if (comm->rank() == comm->size() - 1) ADD_FAILURE() << "deliberate failure on the last rank";
  comm->barrier();
}

}  // namespace
}  // namespace tandem
