// Tests of the shared-memory backend with real processes (fork per rank),
// meeting through a loopback TCP store served by rank 0.
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/zeros.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include "tandem/comm/backend.h"
#include "tandem/comm/store.h"
#include "tandem/core/error.h"
#include "tests/support/collective_checks.h"
#include "tests/support/multiproc.h"

namespace tandem {
namespace {

using std::chrono::milliseconds;
using testing::expect_ranks_succeed;

std::shared_ptr<Store> rank_store(int rank, int port, Millis timeout) {
  return make_tcp_store("127.0.0.1", port, rank == 0, timeout);
}

std::shared_ptr<Communicator> connect(int rank, int size, const std::shared_ptr<Store>& store,
                                      Millis timeout, const std::string& group = "world") {
  BackendOptions options;
  options.rank = rank;
  options.size = size;
  options.store = with_prefix(store, "shm-test");
  options.timeout = timeout;
  options.group_name = group;
  return make_shm_communicator(options);
}

// Rank 0 serves the store: it leaves only after every rank is through with it.
void leave_together(Store& store, int rank, int size) {
  store.set("left-" + std::to_string(rank), "1");
  if (rank != 0) return;
  std::vector<std::string> keys;
  for (int r = 0; r < size; ++r) keys.push_back("left-" + std::to_string(r));
  store.wait(keys, milliseconds(30'000));
}

// A group name that no other process uses: ctest runs other tests beside
// this one, whose segments come and go in /dev/shm meanwhile.
std::string own_group() { return "leakcheck" + std::to_string(getpid()); }

// The segments of `group` and its subgroups in /dev/shm now, named
// "tandem-<16 hex digits>-<group>[.<subgroup>]": none may be left once
// every rank is gone.
std::set<std::string> segments_of(const std::string& group) {
  constexpr size_t kGroupAt = 24;  // after "tandem-", the token and "-"
  std::set<std::string> names;
  if (DIR* dir = opendir("/dev/shm")) {
    while (dirent* e = readdir(dir)) {
      std::string name = e->d_name;
      if (name.rfind("tandem-", 0) == 0 && name.compare(kGroupAt, group.size(), group) == 0)
        names.insert(name);
    }
    closedir(dir);
  }
  return names;
}

testing::MultiprocOptions long_run() {
  testing::MultiprocOptions options;
  options.timeout = milliseconds(120'000);
  return options;
}

void check_world(int world_size) {
  const std::string group = own_group();
  expect_ranks_succeed(
      world_size,
      [group](int rank, int size, int port) {
        auto store = rank_store(rank, port, milliseconds(30'000));
        auto comm = connect(rank, size, store, milliseconds(30'000), group);
        EXPECT_EQ(comm->backend(), "shm");
        testing::check_collectives(*comm);
      },
      long_run());
  EXPECT_TRUE(segments_of(group).empty());
}

TEST(ShmCommunicator, CollectivesWorldSize1) { check_world(1); }
TEST(ShmCommunicator, CollectivesWorldSize2) { check_world(2); }
TEST(ShmCommunicator, CollectivesWorldSize3) { check_world(3); }
TEST(ShmCommunicator, CollectivesWorldSize4) { check_world(4); }

TEST(ShmCommunicator, LargeAllReduceIsExactAndRepeatable) {
  // Several pipelined chunks, uneven shards, back to back (buffers reused).
  expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto store = rank_store(rank, port, milliseconds(30'000));
    auto comm = connect(rank, size, store, milliseconds(30'000));
    const int64_t n = (int64_t{3} << 20) + 5;
    for (int round = 0; round < 3; ++round) {
      at::Tensor t = at::arange(n, at::kDouble).add_(rank + round);
      comm->all_reduce(t);
      at::Tensor want = at::arange(n, at::kDouble).mul_(3).add_(3 + 3 * round);
      ASSERT_TRUE(t.equal(want)) << "rank " << rank << " round " << round;
    }
  });
}

TEST(ShmCommunicator, SplitAndNewGroup) {
  expect_ranks_succeed(4, [](int rank, int size, int port) {
    auto store = rank_store(rank, port, milliseconds(30'000));
    auto comm = connect(rank, size, store, milliseconds(30'000));
    // Colors by parity, keys reversed: {2, 0} and {3, 1}.
    auto half = comm->split(rank % 2, -rank);
    ASSERT_NE(half, nullptr);
    EXPECT_EQ(half->size(), 2);
    EXPECT_EQ(half->rank(), rank < 2 ? 1 : 0);
    at::Tensor t = at::full({5}, static_cast<double>(rank), at::kDouble);
    half->all_reduce(t);
    EXPECT_EQ(t[0].item<double>(), rank % 2 == 0 ? 2.0 : 4.0);
    testing::check_collectives(*half, {0, 1, 7, 1000}, true);

    auto trio = comm->new_group({1, 2, 3});
    if (rank == 0) {
      EXPECT_EQ(trio, nullptr);
    } else {
      ASSERT_NE(trio, nullptr);
      EXPECT_EQ(trio->rank(), rank - 1);
      at::Tensor s = at::full({3}, static_cast<double>(rank), at::kDouble);
      trio->all_reduce(s, ReduceOp::kMax);
      EXPECT_EQ(s[2].item<double>(), 3.0);
    }
    // The parent is still usable after its splits.
    at::Tensor p = at::full({2}, 1.0, at::kFloat);
    comm->all_reduce(p);
    EXPECT_EQ(p[1].item<float>(), 4.0f);
  });
}

TEST(ShmCommunicator, PointToPointRunsBesideCollectives) {
  expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto store = rank_store(rank, port, milliseconds(30'000));
    auto comm = connect(rank, size, store, milliseconds(30'000));
    int right = (rank + 1) % size;
    int left = (rank + size - 1) % size;
    // 3 MiB messages on two tags, received in the opposite order, while
    // collectives run on this thread.
    at::Tensor a = at::full({786432}, static_cast<float>(rank), at::kFloat);
    at::Tensor b = at::full({100}, static_cast<float>(rank + 10), at::kFloat);
    at::Tensor got_a = at::zeros({786432}, at::kFloat);
    at::Tensor got_b = at::zeros({100}, at::kFloat);
    auto send_a = comm->send_async(a, right, 1);
    auto send_b = comm->send_async(b, right, 2);
    auto recv_b = comm->recv_async(got_b, left, 2);
    auto recv_a = comm->recv_async(got_a, left, 1);
    for (int i = 0; i < 20; ++i) {
      at::Tensor t = at::full({70000}, 1.0, at::kFloat);
      comm->all_reduce(t);
      ASSERT_EQ(t[69999].item<float>(), 3.0f);
    }
    for (auto& w : {send_a, send_b, recv_b, recv_a}) w->wait(milliseconds(30'000));
    EXPECT_EQ(got_a[786431].item<float>(), static_cast<float>(left));
    EXPECT_EQ(got_b[99].item<float>(), static_cast<float>(left + 10));
  });
}

TEST(ShmCommunicator, BadInputThrowsInvalidArgument) {
  expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto store = rank_store(rank, port, milliseconds(30'000));
    BackendOptions bad;
    bad.rank = 2;
    bad.size = 2;
    bad.store = store;
    EXPECT_THROW(make_shm_communicator(bad), InvalidArgument);
    bad.rank = 0;
    bad.store = nullptr;
    EXPECT_THROW(make_shm_communicator(bad), InvalidArgument);

    auto comm = connect(rank, size, store, milliseconds(30'000));
    at::Tensor full = at::zeros({10}, at::kFloat);
    try {
      comm->all_gather(full, at::zeros({4}, at::kFloat));
      ADD_FAILURE() << "all_gather with a 4-element shard of 10 over 2 ranks did not throw";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("must have 5"), std::string::npos) << e.what();
    }
    EXPECT_THROW(comm->reduce_scatter(at::zeros({6}, at::kFloat), full), InvalidArgument);
    EXPECT_THROW(comm->all_to_all(at::zeros({9}, at::kFloat), at::zeros({9}, at::kFloat)),
                 InvalidArgument);
    // A receive of the wrong size keeps the message for the right one.
    if (rank == 0) {
      comm->send(at::full({4}, 7.0, at::kFloat), 1, 3);
    } else {
      at::Tensor wrong = at::zeros({5}, at::kFloat);
      try {
        comm->recv(wrong, 0, 3);
        ADD_FAILURE() << "recv of 20 bytes matched a 16-byte message";
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find("16 bytes"), std::string::npos) << e.what();
      }
      at::Tensor right = at::zeros({4}, at::kFloat);
      comm->recv(right, 0, 3);
      EXPECT_EQ(right[3].item<float>(), 7.0f);
    }
    // Argument errors leave the communicator usable.
    at::Tensor t = at::ones_like(full);
    comm->all_reduce(t);
    EXPECT_EQ(t[9].item<float>(), 2.0f);
  });
}

TEST(ShmCommunicator, MissingRankAtSetupTimesOut) {
  const std::string group = own_group();
  expect_ranks_succeed(3, [group](int rank, int size, int port) {
    auto store = rank_store(rank, port, milliseconds(30'000));
    if (rank == 2) {
      // Never joins; stays alive until the others have given up.
      store->get("gave-up-0", milliseconds(30'000));
      store->get("gave-up-1", milliseconds(30'000));
      leave_together(*store, rank, size);
      return;
    }
    auto start = std::chrono::steady_clock::now();
    try {
      connect(rank, size, store, milliseconds(1'000), group);
      ADD_FAILURE() << "setup without rank 2 did not throw";
    } catch (const TimeoutError& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("rank(s) 2"), std::string::npos) << msg;
      EXPECT_NE(msg.find("raise --comm-timeout or TANDEM_COMM_TIMEOUT"), std::string::npos) << msg;
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(4'000));
    store->set("gave-up-" + std::to_string(rank), "1");
    leave_together(*store, rank, size);
  });
  EXPECT_TRUE(segments_of(group).empty());
}

TEST(ShmCommunicator, MissingRankAtCollectiveTimesOut) {
  expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto store = rank_store(rank, port, milliseconds(30'000));
    auto comm = connect(rank, size, store, milliseconds(2'000));
    if (rank == 2) {
      store->get("gave-up-0", milliseconds(30'000));
      store->get("gave-up-1", milliseconds(30'000));
      leave_together(*store, rank, size);
      return;
    }
    at::Tensor t = at::ones({1 << 20}, at::kFloat);
    auto start = std::chrono::steady_clock::now();
    try {
      comm->all_reduce(t);
      ADD_FAILURE() << "all_reduce without rank 2 did not throw";
    } catch (const TimeoutError& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("all_reduce #1"), std::string::npos) << msg;
      EXPECT_NE(msg.find("rank 2 (pid"), std::string::npos) << msg;
      EXPECT_NE(msg.find("raise --comm-timeout or TANDEM_COMM_TIMEOUT"), std::string::npos) << msg;
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(3'500));
    // The communicator is unusable afterwards.
    EXPECT_THROW(comm->barrier(), PeerError);
    store->set("gave-up-" + std::to_string(rank), "1");
    leave_together(*store, rank, size);
  });
}

TEST(ShmCommunicator, KilledRankRaisesPeerErrorAndLeavesNothingBehind) {
  const std::string group = own_group();
  constexpr int kVictim = 1;
  auto results = testing::run_ranks(3, [group](int rank, int size, int port) {
    auto store = rank_store(rank, port, milliseconds(30'000));
    auto comm = connect(rank, size, store, milliseconds(30'000), group);
    at::Tensor t = at::ones({4 << 20}, at::kFloat);  // 16 MiB: many chunks
    for (int i = 0; i < 50; ++i) {
      if (rank == kVictim && i == 2) {
        auto work = comm->all_reduce_async(t);
        raise(SIGKILL);  // dies while its peers are inside this all_reduce
      }
      auto start = std::chrono::steady_clock::now();
      try {
        comm->all_reduce(t);
      } catch (const PeerError& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find("peer rank 1"), std::string::npos) << msg;
        EXPECT_NE(msg.find("died"), std::string::npos) << msg;
        EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(5'000));
        return;
      }
    }
    ADD_FAILURE() << "rank " << rank << ": 50 all_reduces without rank 1 did not throw";
  });
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[kVictim].signal, SIGKILL);
  for (int r : {0, 2}) {
    EXPECT_TRUE(results[r].signal == 0 && results[r].exit_code == 0)
        << "rank " << r << " failed; its output ends:\n"
        << testing::tail(results[r].output);
  }
  EXPECT_TRUE(segments_of(group).empty());
}

}  // namespace
}  // namespace tandem
