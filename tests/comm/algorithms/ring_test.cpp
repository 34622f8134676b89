#include "comm/algorithms/ring.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

namespace tandem::detail {
namespace {

// The schedule on its own: which partial sums each rank holds after each
// step, as sets of contributing ranks.
TEST(Ring, ReduceScatterStepsReduceEveryShardOntoItsOwnerOnce) {
  for (int size = 1; size <= 6; ++size) {
    // holds[r][c]: the ranks whose input rank r's partial shard c includes.
    std::vector<std::vector<std::set<int>>> holds(size, std::vector<std::set<int>>(size));
    for (int r = 0; r < size; ++r) {
      for (int c = 0; c < size; ++c) holds[r][c] = {r};
    }
    for (int step = 0; step < size - 1; ++step) {
      auto before = holds;
      for (int r = 0; r < size; ++r) {
        const int left = (r + size - 1) % size;
        const RingStep mine = ring_reduce_scatter_step(r, size, step);
        ASSERT_EQ(ring_reduce_scatter_step(left, size, step).send_shard, mine.recv_shard)
            << "rank " << r << " receives a shard its left neighbour does not send";
        for (int who : before[left][mine.recv_shard]) {
          EXPECT_TRUE(holds[r][mine.recv_shard].insert(who).second)
              << "rank " << who << "'s input counted twice in shard " << mine.recv_shard;
        }
      }
    }
    for (int r = 0; r < size; ++r) {
      EXPECT_EQ(holds[r][r].size(), static_cast<size_t>(size)) << "rank " << r << " of " << size;
    }
  }
}

TEST(Ring, AllGatherStepsDeliverEveryShardEverywhere) {
  for (int size = 1; size <= 6; ++size) {
    std::vector<std::set<int>> has(size);
    for (int r = 0; r < size; ++r) has[r] = {r};
    for (int step = 0; step < size - 1; ++step) {
      auto before = has;
      for (int r = 0; r < size; ++r) {
        const int left = (r + size - 1) % size;
        const RingStep mine = ring_all_gather_step(r, size, step);
        ASSERT_EQ(ring_all_gather_step(left, size, step).send_shard, mine.recv_shard);
        ASSERT_TRUE(before[left].count(mine.recv_shard))
            << "rank " << left << " sends shard " << mine.recv_shard << " before it has it";
        has[r].insert(mine.recv_shard);
      }
    }
    for (int r = 0; r < size; ++r) EXPECT_EQ(has[r].size(), static_cast<size_t>(size));
  }
}

// Threads as ranks, exchanging tensors through mailboxes.
class Mailboxes {
 public:
  class Rank final : public RingTransport {
   public:
    Rank(Mailboxes& m, int rank) : m_(m), rank_(rank) {}
    void send_recv(const at::Tensor& out, int dst, const at::Tensor& in, int src, int tag,
                   const OpContext&) override {
      m_.post({rank_, dst, tag}, out.clone());
      in.copy_(m_.take({src, rank_, tag}));
    }

   private:
    Mailboxes& m_;
    const int rank_;
  };

 private:
  using Key = std::tuple<int, int, int>;  // src, dst, tag
  void post(const Key& k, at::Tensor t) {
    std::lock_guard<std::mutex> lock(mutex_);
    boxes_[k].push_back(std::move(t));
    cv_.notify_all();
  }
  at::Tensor take(const Key& k) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!cv_.wait_for(lock, std::chrono::seconds(20), [&] { return !boxes_[k].empty(); })) {
      throw std::runtime_error("a ring step waited 20 s for its message");
    }
    at::Tensor t = boxes_[k].front();
    boxes_[k].pop_front();
    return t;
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<Key, std::deque<at::Tensor>> boxes_;  // guarded by mutex_
};

template <typename Body>
void run_ring(int size, Body&& body) {
  Mailboxes boxes;
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      Mailboxes::Rank tr(boxes, r);
      body(tr, r);
    });
  }
  for (auto& t : threads) t.join();
}

// Through a transport, on 2-D tensors (which count as their flat order) of
// lengths that do not divide evenly.
TEST(Ring, ReduceScatterThenAllGatherIsTheAllReduce) {
  for (int size : {1, 2, 3, 4}) {
    for (int64_t rows : {int64_t{1}, int64_t{5}, int64_t{333}}) {
      std::vector<at::Tensor> in;
      for (int r = 0; r < size; ++r) {
        in.push_back(at::arange(rows * 3, at::kLong).add_(r * 10).reshape({rows, 3}));
      }
      const at::Tensor want = at::stack(in).sum(0);
      run_ring(size, [&](RingTransport& tr, int rank) {
        OpContext ctx{1, "all_reduce", OpDescription{"all_reduce"}, Deadline(Millis(20'000))};
        const ShardRange mine = shard_range(rows * 3, size, rank);
        at::Tensor shard = at::zeros({mine.numel}, at::kLong);
        ring_reduce_scatter(tr, rank, size, shard, in[rank], ReduceOp::kSum, 1, ctx);
        EXPECT_TRUE(at::equal(shard, want.reshape({-1}).narrow(0, mine.offset, mine.numel)));
        at::Tensor out = at::zeros({rows, 3}, at::kLong);
        ring_all_gather(tr, rank, size, out, shard, 2, ctx);
        EXPECT_TRUE(at::equal(out, want)) << "rank " << rank << " of " << size;
      });
    }
  }
}

}  // namespace
}  // namespace tandem::detail
