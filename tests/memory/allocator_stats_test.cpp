#include "tandem/memory/allocator_stats.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <gtest/gtest.h>

namespace tandem::memory {
namespace {

TEST(AllocatorStats, CountsTensorBytesNowAndAtPeak) {
  install_counting_cpu_allocator();
  install_counting_cpu_allocator();  // idempotent
  const AllocatorStats before = cpu_allocator_stats();
  ASSERT_TRUE(before.installed);
  reset_cpu_allocator_peak();
  {
    at::Tensor a = at::empty({1 << 20}, at::kFloat);  // 4 MiB
    at::Tensor b = at::ones({1 << 18}, at::kDouble);  // 2 MiB
    EXPECT_EQ(cpu_allocator_stats().current_bytes - before.current_bytes, 6 << 20);
    EXPECT_DOUBLE_EQ(b.sum().item<double>(), 1 << 18);  // the memory is usable
  }
  const AllocatorStats after = cpu_allocator_stats();
  EXPECT_EQ(after.current_bytes, before.current_bytes);
  EXPECT_GE(after.peak_bytes - before.current_bytes, 6 << 20);
  EXPECT_GE(after.allocations - before.allocations, 2);
}

TEST(AllocatorStats, ResidentSetGrowsWithTouchedMemory) {
  const int64_t rss = resident_bytes();
  ASSERT_GT(rss, 0);
  at::Tensor big = at::ones({16 << 20}, at::kByte);  // 16 MiB, written
  EXPECT_GE(peak_resident_bytes(), rss + (12 << 20));
  EXPECT_GE(peak_resident_bytes(), resident_bytes());
}

}  // namespace
}  // namespace tandem::memory
