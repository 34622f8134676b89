#include "comm/algorithms/hierarchical.h"

#include <gtest/gtest.h>

namespace tandem::detail {
namespace {

TEST(Hierarchical, RanksAreNumberedHostByHost) {
  EXPECT_EQ(host_position(0, 4).host, 0);
  EXPECT_EQ(host_position(5, 4).host, 1);
  EXPECT_EQ(host_position(5, 4).local, 1);
  EXPECT_EQ(host_position(7, 1).host, 7);
  EXPECT_EQ(host_position(7, 1).local, 0);
}

// A host's segment is its ranks' world slices, back to back, and cutting it
// among the host's ranks gives each one its world slice again: the property
// the all_gather composition rests on.
TEST(Hierarchical, HostSegmentsTileTheVectorAndSplitIntoTheWorldsSlices) {
  for (int hosts : {1, 2, 3}) {
    for (int local : {1, 2, 3, 4}) {
      for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{100}, int64_t{1001}}) {
        const int world = hosts * local;
        int64_t next = 0;
        for (int h = 0; h < hosts; ++h) {
          const ShardRange seg = host_segment(n, hosts, local, h);
          EXPECT_EQ(seg.offset, next) << "host " << h;
          EXPECT_LE(seg.numel, host_segment(n, hosts, local, 0).numel) << "host 0 is longest";
          for (int l = 0; l < local; ++l) {
            const ShardRange within = shard_range(seg.numel, local, l);
            const ShardRange world_slice = shard_range(n, world, h * local + l);
            EXPECT_EQ(seg.offset + within.offset, world_slice.offset)
                << n << " over " << hosts << "x" << local << ", rank " << h * local + l;
            EXPECT_EQ(within.numel, world_slice.numel);
          }
          next += seg.numel;
        }
        EXPECT_EQ(next, n);
      }
    }
  }
}

}  // namespace
}  // namespace tandem::detail
