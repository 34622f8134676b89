// The chunked all_reduce algorithms over an in-process transport
// (fake_chunk_transport.h), against the single-process sum of every rank's
// input: the algorithms on their own, apart from shared memory.
#include "comm/algorithms/two_shot.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <vector>

#include "comm/algorithms/one_shot.h"
#include "tests/comm/algorithms/fake_chunk_transport.h"

namespace tandem {
namespace {

using detail::ChunkPlan;
using testing::FakeChunkGroup;

std::byte* bytes_of(const at::Tensor& t) { return static_cast<std::byte*>(t.data_ptr()); }

// Whole numbers, so that every order of summation gives the same value.
std::vector<at::Tensor> inputs(int size, int64_t numel, at::ScalarType dtype) {
  std::vector<at::Tensor> out;
  for (int r = 0; r < size; ++r) {
    out.push_back(
        at::arange(numel, at::kLong).mul_(3).add_(7 * r).remainder_(13).sub_(6).to(dtype));
  }
  return out;
}

// Small buffers: 4 KiB, so that 100003 doubles take dozens of chunks and
// every buffer is reused many times; both 3 and 4 buffers per rank.
struct Layout {
  int buffers;
  size_t buffer_bytes;
};
const Layout kLayouts[] = {{3, 4096}, {4, 4096}, {4, 1024}};

TEST(TwoShot, AllReduceMatchesOneProcess) {
  for (const Layout& layout : kLayouts) {
    for (int size : {1, 2, 3, 4}) {
      for (int64_t numel : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{100'003}}) {
        auto in = inputs(size, numel, at::kDouble);
        const at::Tensor want = at::stack(in).sum(0);
        std::vector<at::Tensor> got(in.size());
        FakeChunkGroup group(size, layout.buffers, layout.buffer_bytes);
        group.run([&](FakeChunkGroup::Rank& tr) {
          at::Tensor t = in[tr.rank()].clone();
          ChunkPlan plan(numel, size, 8, tr.slice_bytes());
          detail::two_shot(tr, plan, 0, bytes_of(t), bytes_of(t), at::kDouble, ReduceOp::kSum,
                           /*gather=*/true);
          // A second operation continues the chunk numbering (and so the
          // buffers' reuse) where the first ended.
          at::Tensor twice = t.clone();
          detail::two_shot(tr, plan, static_cast<uint64_t>(plan.chunks), bytes_of(twice),
                           bytes_of(twice), at::kDouble, ReduceOp::kSum, true);
          EXPECT_TRUE(at::equal(twice, t.mul(size))) << "rank " << tr.rank();
          got[tr.rank()] = t;
        });
        for (int r = 0; r < size; ++r) {
          EXPECT_TRUE(at::equal(got[r], want))
              << "rank " << r << " of " << size << ", " << numel << " elements, " << layout.buffers
              << " buffers of " << layout.buffer_bytes;
        }
      }
    }
  }
}

TEST(TwoShot, ReduceScatterLeavesEachRankItsShard) {
  for (int size : {2, 3, 4}) {
    for (int64_t numel : {int64_t{5}, int64_t{1000}, int64_t{30'001}}) {
      auto in = inputs(size, numel, at::kInt);
      const at::Tensor want = std::get<0>(at::stack(in).max(0));
      FakeChunkGroup group(size, 4, 2048);
      group.run([&](FakeChunkGroup::Rank& tr) {
        const ShardRange mine = shard_range(numel, size, tr.rank());
        at::Tensor out = at::zeros({mine.numel}, at::kInt);
        ChunkPlan plan(numel, size, 4, tr.slice_bytes());
        detail::two_shot(tr, plan, 0, bytes_of(out), bytes_of(in[tr.rank()]), at::kInt,
                         ReduceOp::kMax, /*gather=*/false);
        EXPECT_TRUE(at::equal(out, want.narrow(0, mine.offset, mine.numel)))
            << "rank " << tr.rank() << " of " << size << ", " << numel << " elements";
      });
    }
  }
}

TEST(TwoShot, EveryRankEndsWithTheSameBits) {
  const int size = 3;
  const int64_t numel = 50'000;
  std::vector<at::Tensor> in;
  for (int r = 0; r < size; ++r) in.push_back(at::randn({numel}, at::kFloat));
  std::vector<at::Tensor> got(size);
  FakeChunkGroup group(size, 4, 4096);
  group.run([&](FakeChunkGroup::Rank& tr) {
    at::Tensor t = in[tr.rank()].clone();
    ChunkPlan plan(numel, size, 4, tr.slice_bytes());
    detail::two_shot(tr, plan, 0, bytes_of(t), bytes_of(t), at::kFloat, ReduceOp::kSum, true);
    got[tr.rank()] = t;
  });
  EXPECT_TRUE(at::equal(got[0], got[1]));
  EXPECT_TRUE(at::equal(got[0], got[2]));
  EXPECT_TRUE(got[0].allclose(in[0].add(in[1]).add(in[2]), 1e-5, 1e-5));
}

TEST(OneShot, AllReduceMatchesOneProcess) {
  for (int size : {1, 2, 3, 4}) {
    for (int64_t numel : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{5'000}}) {
      auto in = inputs(size, numel, at::kLong);
      const at::Tensor want = std::get<0>(at::stack(in).min(0));
      FakeChunkGroup group(size, 3, 1024);  // 128 int64 per chunk
      group.run([&](FakeChunkGroup::Rank& tr) {
        at::Tensor t = in[tr.rank()].clone();
        detail::one_shot(tr, 0, bytes_of(t), numel, at::kLong, ReduceOp::kMin);
        const int64_t used = detail::one_shot_chunks(numel, tr.buffer_bytes(), 8);
        at::Tensor again = in[tr.rank()].clone();
        detail::one_shot(tr, static_cast<uint64_t>(used), bytes_of(again), numel, at::kLong,
                         ReduceOp::kMin);
        EXPECT_TRUE(at::equal(t, want) && at::equal(again, want))
            << "rank " << tr.rank() << " of " << size << ", " << numel << " elements";
      });
    }
  }
}

}  // namespace
}  // namespace tandem
