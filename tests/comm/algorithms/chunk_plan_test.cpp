#include "comm/algorithms/chunk_plan.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "comm/algorithms/one_shot.h"

namespace tandem::detail {
namespace {

TEST(ChunkPlan, ChunksCoverEveryShardExactlyOnce) {
  for (int size : {1, 2, 3, 4, 7}) {
    for (int64_t numel : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{100'003}}) {
      for (size_t chunk_bytes : {size_t{4}, size_t{64}, size_t{4096}}) {
        ChunkPlan plan(numel, size, 4, chunk_bytes);
        ASSERT_GE(plan.chunk, 1);
        EXPECT_EQ(plan.chunk, std::max<int64_t>(1, static_cast<int64_t>(chunk_bytes / 4)));
        EXPECT_EQ(plan.chunks, ceil_div(plan.shards[0].numel, plan.chunk));
        EXPECT_EQ(plan.total_bytes(), static_cast<size_t>(numel) * 4);
        for (int s = 0; s < size; ++s) {
          int64_t covered = 0;
          for (int64_t t = 0; t < plan.chunks; ++t) {
            // Chunk t of shard s starts where chunk t - 1 ended.
            EXPECT_EQ(plan.offset(s, t), static_cast<size_t>(plan.shards[s].offset + covered) * 4);
            EXPECT_EQ(plan.bytes(s, t), static_cast<size_t>(plan.count(s, t)) * 4);
            EXPECT_LE(plan.count(s, t), plan.chunk);
            covered += plan.count(s, t);
          }
          EXPECT_EQ(covered, plan.shards[s].numel) << "shard " << s << " of " << size;
        }
      }
    }
  }
}

TEST(ChunkPlan, ElementsWiderThanAChunkStillMove) {
  ChunkPlan plan(5, 2, 16, 8);  // 16-byte elements, 8-byte chunks
  EXPECT_EQ(plan.chunk, 1);
  EXPECT_EQ(plan.chunks, 3);  // shard 0 has 3 elements
  EXPECT_EQ(plan.count(1, 2), 0);
}

TEST(RunPipeline, StagesRunInOrderOneStepApart) {
  for (int64_t chunks : {int64_t{0}, int64_t{1}, int64_t{2}, int64_t{5}}) {
    std::vector<std::pair<int, int64_t>> events;  // (stage, chunk)
    run_pipeline(
        chunks,
        [&](int64_t t) {
          events.push_back({0, t});
        },
        [&](int64_t t) {
          events.push_back({1, t});
        },
        [&](int64_t t) {
          events.push_back({2, t});
        });
    ASSERT_EQ(events.size(), static_cast<size_t>(3 * chunks));
    // Step i runs stage k of chunk i - k, stages in order within the step.
    std::vector<std::pair<int, int64_t>> want;
    for (int64_t i = 0; i < chunks + 2; ++i) {
      for (int k = 0; k < 3; ++k) {
        if (i - k >= 0 && i - k < chunks) want.push_back({k, i - k});
      }
    }
    EXPECT_EQ(events, want);
  }
}

TEST(RunPipeline, AtMostDepthChunksAreInFlight) {
  int in_flight = 0;
  int most = 0;
  run_pipeline(
      10,
      [&](int64_t) {
        ++in_flight;
        most = std::max(most, in_flight);
      },
      [&](int64_t) { --in_flight; });
  EXPECT_EQ(in_flight, 0);
  EXPECT_EQ(most, 2);
}

TEST(ChunkBuffers, AChunkWaitsForTheReadersOfItsBuffersLastChunk) {
  for (int buffers : {3, 4}) {
    for (uint64_t g = 0; g < 20; ++g) {
      EXPECT_EQ(chunk_buffer(g, buffers), static_cast<int>(g % buffers));
      // The chunk that used g's buffer before is g - buffers; it is fully
      // read once every rank's done counter reached (g - buffers) + 1.
      EXPECT_EQ(chunk_buffer_free_after(g, buffers),
                g < static_cast<uint64_t>(buffers) ? 0 : g - buffers + 1);
    }
  }
}

TEST(OneShot, SmallOperationsGoOneShotUpToTheirShareOfTheLimit) {
  EXPECT_TRUE(prefer_one_shot(kOneShotBytes / 2, 2));
  EXPECT_FALSE(prefer_one_shot(kOneShotBytes / 2 + 1, 2));
  EXPECT_TRUE(prefer_one_shot(kOneShotBytes / 4, 4));
  EXPECT_FALSE(prefer_one_shot(kOneShotBytes / 3, 4));
  EXPECT_EQ(one_shot_chunks(1000, 4096, 8), 2);  // 512 elements per buffer
  EXPECT_EQ(one_shot_chunks(1024, 4096, 8), 2);
  EXPECT_EQ(one_shot_chunks(1025, 4096, 8), 3);
}

}  // namespace
}  // namespace tandem::detail
