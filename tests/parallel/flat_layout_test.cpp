#include "tandem/parallel/flat_layout.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "tandem/core/error.h"

namespace tandem::parallel {
namespace {

std::vector<at::Tensor> sample_tensors() {
  return {at::arange(6, at::kFloat).view({2, 3}), at::arange(100, 104, at::kFloat),
          at::arange(200, 201, at::kFloat), at::arange(300, 305, at::kFloat)};
}

TEST(FlatLayout, OrderAndOffsets) {
  auto t = sample_tensors();
  FlatLayout layout = make_flat_layout(t, {3, 0, 1});
  ASSERT_EQ(layout.entries.size(), 3u);
  EXPECT_EQ(layout.numel, 15);
  EXPECT_EQ(layout.entries[0].index, 3u);
  EXPECT_EQ(layout.entries[1].offset, 5);
  EXPECT_EQ(layout.entries[1].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(layout.entries[2].offset, 11);
}

TEST(FlatLayout, ShardsRoundTripAtEveryWorldSize) {
  auto t = sample_tensors();
  FlatLayout layout = make_flat_layout(t, {0, 1, 2, 3});
  at::Tensor whole = at::cat({t[0].view(-1), t[1], t[2], t[3]});
  for (int world = 1; world <= 5; ++world) {
    std::vector<at::Tensor> back = {at::zeros({2, 3}), at::zeros({4}), at::zeros({1}),
                                    at::zeros({5})};
    for (int r = 0; r < world; ++r) {
      ShardRange range = shard_range(layout.numel, world, r);
      at::Tensor shard = at::empty({range.numel});
      copy_range_out(layout, t, range, shard);
      EXPECT_TRUE(at::equal(shard, whole.narrow(0, range.offset, range.numel)))
          << "world " << world << " rank " << r;
      copy_range_in(layout, shard, range, back);
    }
    for (size_t i = 0; i < t.size(); ++i) EXPECT_TRUE(at::equal(back[i], t[i])) << i;
  }
}

TEST(FlatLayout, PiecesSpanEntryBoundaries) {
  auto t = sample_tensors();
  FlatLayout layout = make_flat_layout(t, {0, 1, 2, 3});  // offsets 0, 6, 10, 11
  auto pieces = pieces_in(layout, {5, 7});                  // [5, 12)
  ASSERT_EQ(pieces.size(), 4u);
  EXPECT_EQ(pieces[0].entry_offset, 5);
  EXPECT_EQ(pieces[0].numel, 1);
  EXPECT_EQ(pieces[1].range_offset, 1);
  EXPECT_EQ(pieces[1].numel, 4);
  EXPECT_EQ(pieces[2].numel, 1);
  EXPECT_EQ(pieces[3].numel, 1);
  EXPECT_THROW(pieces_in(layout, {12, 6}), InvalidArgument);  // 16 elements in all
}

TEST(FlatLayout, ViewsShareTheFlatBuffer) {
  auto t = sample_tensors();
  FlatLayout layout = make_flat_layout(t, {1, 0});
  at::Tensor flat = at::arange(10, at::kFloat);
  auto views = entry_views(layout, flat, t.size());
  EXPECT_FALSE(views[2].defined());
  EXPECT_EQ(views[0].sizes(), t[0].sizes());
  EXPECT_EQ(views[0][0][0].item<float>(), 4.0f);
  views[1].fill_(-1);
  EXPECT_EQ(flat[3].item<float>(), -1.0f);
}

TEST(FlatLayout, RejectsMixedDtypes) {
  std::vector<at::Tensor> t = {at::zeros({2}), at::zeros({2}, at::kDouble)};
  EXPECT_THROW(make_flat_layout(t, {0, 1}), InvalidArgument);
  EXPECT_THROW(make_flat_layout(t, {2}), InvalidArgument);
}

}  // namespace
}  // namespace tandem::parallel
